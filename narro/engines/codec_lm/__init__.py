"""The quality tier: a VALL-E codec language model over EnCodec tokens, prompted by a reference recording.

Modules (torch is imported only inside this package, and not by `engine` at its top):

- `engine`: the `codec-lm` engine (voices.yaml options, identity, load, synthesize, stream);
- `codec`: neural audio codecs behind one interface (EnCodec from a local folder);
- `frontend`: text to phoneme ids (espeak-ng via piper) and the vocabulary;
- `model`: the AR and NAR transformers and their training loss;
- `sampling`, `generate`: token sampling, its guards, and streaming decode;
- `checkpoint`: safetensors weights plus config.json, checked on load;
- `reference`: the speaker prompt, checked, trimmed and encoded;
- `train`: the training loop; `convert`: the published VALL-E-X checkpoint to narro's format.
"""

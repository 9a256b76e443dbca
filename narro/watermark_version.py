"""The watermark version narro writes now (narro.watermark embeds it; narro.plan keys every clip by it).

It lives outside the narro.watermark package so that planning, which only needs the number,
does not load the signal processing that importing the package brings (numpy, scipy).
"""

VERSION = 2
"""The version `narro.watermark.embed` writes; version 1 is still read (and written when asked, for tests and the benchmark)."""

"""A store in an S3 bucket (AWS or any S3-compatible server), same layout as the local store.

`s3://bucket/prefix` holds `{prefix}/{course}/{id}.mp3`, `{id}.vtt` and `{id}.srt` (captions, when given),
`{id}.json` (the sidecar) and `{course}/index.json`. Credentials and region come from boto3's
default chain (environment, shared profile, instance role); the endpoint from the caller (the
`s3.endpoint_url` setting, NARRO_S3_ENDPOINT_URL or `narro render --endpoint-url`), else from
boto3's own chain (AWS_ENDPOINT_URL, the profile's endpoint_url), else AWS.

Every object is sent with its Content-MD5, which S3 checks before it stores anything: a PUT is
whole or absent. The MP3 goes first, captions next, the sidecar last: the sidecar is the commit
marker, and `published_key` trusts it only when the MP3 object's size and sha256 (in its
metadata) match what the sidecar says, so an interrupted upload reads as "not published" and
is simply redone on the next run. `published_clips` does the same for a whole course from one
listing (ListObjectsV2, 1,000 keys a page): the sidecar names the MP3's md5, which is the ETag
S3 gives a single-part upload, so the listing's ETag and size prove the MP3 is the sidecar's
(a HEAD compares the sha256 where the ETag is no md5: multipart, SSE-KMS); the course index
remembers both objects' ETags, so an unchanged clip costs no request at all (narro.index).
Nothing here logs or prints credentials.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from narro.errors import StoreError
from narro.index import Published
from narro.layout import INDEX_NAME, json_bytes

T = TypeVar("T")
_MISSING = {"NoSuchKey", "404", "NotFound"}


def _meta(metadata: dict[str, str], name: str) -> str | None:
    """User metadata by name, case-insensitively (some servers capitalise the keys)."""
    for key, value in metadata.items():
        if key.lower() == name:
            return value
    return None


def _etag(value: object) -> str:
    """An ETag without the quotes S3 puts around it."""
    return str(value).strip('"')


class S3Store:
    """Clips in `s3://bucket/prefix`."""

    def __init__(self, url: str, endpoint_url: str | None = None):
        rest = url.partition("://")[2]
        bucket, _, prefix = rest.partition("/")
        if not bucket:
            raise StoreError(f"store '{url}': name a bucket, as in s3://bucket/prefix")
        self.url = f"s3://{bucket}/{prefix.strip('/')}".rstrip("/")
        self.bucket, self.prefix = bucket, prefix.strip("/")
        self.endpoint_url = endpoint_url
        try:
            import boto3
            from botocore.config import Config
        except ImportError as error:  # pragma: no cover - boto3 is a dependency
            raise StoreError("boto3 is not installed: pip install boto3") from error
        # SigV4 throughout: S3-compatible servers (rclone, MinIO) refuse presigned SigV2 URLs.
        config = Config(connect_timeout=5, read_timeout=30, retries={"max_attempts": 2, "mode": "standard"},
                        signature_version="s3v4")
        self._client = boto3.session.Session().client("s3", endpoint_url=self.endpoint_url, config=config)

    # ------------------------------------------------------------------ plumbing

    def _key(self, course: str, name: str) -> str:
        return "/".join(part for part in (self.prefix, course, name) if part)

    def _fail(self, action: str, key: str, error: Exception) -> StoreError:
        from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

        where = f"s3://{self.bucket}/{key}" if key else f"s3://{self.bucket}"
        if isinstance(error, NoCredentialsError):
            return StoreError(f"{where}: no AWS credentials found (set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or a profile)")
        if isinstance(error, ClientError):
            code = str(error.response.get("Error", {}).get("Code", "unknown"))
            hints = {
                "NoSuchBucket": "the bucket does not exist",
                "SignatureDoesNotMatch": "the secret access key is wrong",
                "InvalidAccessKeyId": "the access key id is not known to the server",
                "AccessDenied": "access denied: check the credentials' permissions",
                "403": "access denied: check the credentials",
                "404": "the bucket does not exist",
                "BadDigest": "the upload was corrupted in transit (Content-MD5 mismatch)",
            }
            return StoreError(f"cannot {action} {where}: {hints.get(code, code)}")
        if isinstance(error, BotoCoreError):
            return StoreError(f"cannot {action} {where}: {error}")
        return StoreError(f"cannot {action} {where}: {type(error).__name__}: {error}")

    def _absent_or(self, key: str, call: Callable[[], T]) -> T | None:
        """`call()`, or None when S3 says the object is not there; other failures are StoreErrors."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return call()
        except ClientError as error:
            if str(error.response.get("Error", {}).get("Code")) in _MISSING:
                return None
            raise self._fail("read", key, error) from error
        except BotoCoreError as error:
            raise self._fail("read", key, error) from error

    def _get(self, key: str) -> bytes | None:
        return self._absent_or(key, lambda: self._client.get_object(Bucket=self.bucket, Key=key)["Body"].read())

    def _put(self, key: str, data: bytes, content_type: str, metadata: dict[str, str] | None = None) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        md5 = base64.b64encode(hashlib.md5(data).digest()).decode("ascii")  # noqa: S324 (S3's integrity check)
        try:
            self._client.put_object(Bucket=self.bucket, Key=key, Body=data, ContentMD5=md5,
                                    ContentType=content_type, Metadata=metadata or {})
        except (ClientError, BotoCoreError) as error:
            raise self._fail("write", key, error) from error

    def _delete(self, key: str) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self._client.delete_object(Bucket=self.bucket, Key=key)  # absent is fine: S3 answers 204
        except (ClientError, BotoCoreError) as error:
            raise self._fail("delete", key, error) from error

    # ------------------------------------------------------------------ the Store protocol

    def check(self) -> None:
        """Fail now, with a clear reason, if the bucket cannot be reached or read.

        A listing under the prefix, not HeadBucket: a least-privilege worker may list only its
        prefix (infra/iam/worker-policy.json), and HeadBucket needs ListBucket on the whole bucket.
        """
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self._client.list_objects_v2(Bucket=self.bucket, Prefix=f"{self.prefix}/" if self.prefix else "", MaxKeys=1)
        except (ClientError, BotoCoreError) as error:
            raise self._fail("open", "", error) from error

    def read_sidecar(self, course: str, narration_id: str) -> dict[str, Any] | None:
        data = self._get(self._key(course, f"{narration_id}.json"))
        if data is None:
            return None
        try:
            record = json.loads(data.decode("utf-8"))
        except ValueError:
            return None  # torn or foreign: not published, it will be rewritten
        return record if isinstance(record, dict) else None

    def mp3_metadata(self, course: str, narration_id: str) -> tuple[int, dict[str, str]] | None:
        """Size and user metadata of the MP3 object, or None if it is absent."""
        key = self._key(course, f"{narration_id}.mp3")
        head = self._absent_or(key, lambda: self._client.head_object(Bucket=self.bucket, Key=key))
        return None if head is None else (int(head["ContentLength"]), dict(head.get("Metadata", {})))

    def _listing(self, course: str) -> dict[str, tuple[int, str]]:
        """Name -> (size, ETag) of every object directly under the course (not its `_source/` or audit folders)."""
        from botocore.exceptions import BotoCoreError, ClientError

        base = self._key(course, "") + "/"
        try:
            pages = self._client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=base,
                                                                            Delimiter="/")
            return {item["Key"][len(base):]: (int(item["Size"]), _etag(item["ETag"]))
                    for page in pages for item in page.get("Contents", [])}
        except (ClientError, BotoCoreError) as error:
            raise self._fail("list", base, error) from error

    def published_clips(self, course: str, known: Mapping[str, dict[str, Any]]) -> dict[str, Published]:
        listing = self._listing(course)
        found = {}
        for name, (_, sidecar_etag) in listing.items():
            narration_id = name.removesuffix(".json")
            mp3 = listing.get(f"{narration_id}.mp3")
            if name == narration_id or name == INDEX_NAME or mp3 is None:
                continue  # no sidecar yet (an upload cut short) or not a clip
            earlier = Published.from_entry(known.get(narration_id))
            if earlier is not None and earlier.stored == f"{mp3[1]}+{sidecar_etag}":
                found[narration_id] = earlier  # both objects byte-identical to when they were checked
                continue
            published = self._check(course, narration_id, mp3)
            if published is not None:
                found[narration_id] = published
        return found

    def _check(self, course: str, narration_id: str, mp3: tuple[int, str]) -> Published | None:
        """Read the clip's sidecar (one GET) and check the listed MP3 against it: the clip, or None."""
        key = self._key(course, f"{narration_id}.json")
        got = self._absent_or(key, lambda: self._client.get_object(Bucket=self.bucket, Key=key))
        if got is None:
            return None
        try:
            sidecar = json.loads(got["Body"].read().decode("utf-8"))
        except ValueError:
            return None  # torn or foreign: not published, it will be rewritten
        if not isinstance(sidecar, dict):
            return None
        expected = sidecar.get("mp3", {})
        size, etag = mp3
        if expected.get("md5") != etag or size != expected.get("bytes"):
            # The ETag is no md5 (multipart, SSE-KMS), or the sidecar predates its md5, or the MP3
            # was replaced after the sidecar: only its sha256 metadata can say.
            mp3_key = self._key(course, f"{narration_id}.mp3")
            head = self._absent_or(mp3_key, lambda: self._client.head_object(Bucket=self.bucket, Key=mp3_key))
            if head is None or int(head["ContentLength"]) != expected.get("bytes") \
                    or _meta(dict(head.get("Metadata", {})), "mp3-sha256") != expected.get("sha256"):
                return None  # the MP3 is from another render than this sidecar: not published
            etag = _etag(head["ETag"])
        return Published.of(sidecar, f"{etag}+{_etag(got['ETag'])}")

    def published_key(self, course: str, narration_id: str) -> str | None:
        sidecar = self.read_sidecar(course, narration_id)
        if sidecar is None:
            return None
        head = self.mp3_metadata(course, narration_id)
        if head is None:
            return None
        size, metadata = head
        expected = sidecar.get("mp3", {})
        if size != expected.get("bytes") or _meta(metadata, "mp3-sha256") != expected.get("sha256"):
            return None  # the MP3 is from another render than this sidecar: not published
        key = sidecar.get("content_key")
        return key if isinstance(key, str) else None

    def publish(self, course: str, narration_id: str, mp3: bytes, sidecar: dict[str, Any], *,
                captions: bytes | None = None, srt: bytes | None = None) -> None:
        expected = sidecar.get("mp3", {})
        digest = hashlib.sha256(mp3).hexdigest()
        if expected.get("bytes") != len(mp3) or expected.get("sha256") != digest:
            raise StoreError(f"{course}/{narration_id}: sidecar does not describe the MP3 being published")
        watermark = sidecar.get("watermark") or {}
        metadata = {
            "content-key": str(sidecar.get("content_key", "")),
            "narration-id": narration_id,
            "mp3-sha256": digest,
            "watermark": str(watermark.get("payload", "")),
        }
        self._put(self._key(course, f"{narration_id}.mp3"), mp3, "audio/mpeg", metadata)
        for suffix, data, kind in (("vtt", captions, "text/vtt"), ("srt", srt, "application/x-subrip")):
            if data is not None:
                self._put(self._key(course, f"{narration_id}.{suffix}"), data, f"{kind}; charset=utf-8",
                          {"content-key": metadata["content-key"], "narration-id": narration_id})
            else:
                self._delete(self._key(course, f"{narration_id}.{suffix}"))  # stale captions of an earlier take
        self._put(self._key(course, f"{narration_id}.json"), json_bytes(sidecar), "application/json",
                  {"content-key": metadata["content-key"], "narration-id": narration_id})

    def write_index(self, course: str, index: dict[str, Any]) -> None:
        self._put(self._key(course, INDEX_NAME), json_bytes(index), "application/json")

    def write_object(self, course: str, name: str, data: bytes, content_type: str) -> None:
        self._put(self._key(course, name), data, content_type)

    def read_mp3(self, course: str, narration_id: str) -> bytes | None:
        return self._get(self._key(course, f"{narration_id}.mp3"))

    def mp3_path(self, course: str, narration_id: str) -> Path | None:
        return None  # objects in a bucket are not files here

    def write_once(self, course: str, name: str, data: bytes, content_type: str) -> None:
        """A conditional PUT (If-None-Match: *): the server refuses it with 412 when the object exists.

        AWS S3, MinIO and SeaweedFS honour the condition; a server that ignores it (rclone's) would
        overwrite, which only unique names (narro.audit's) then prevent.
        """
        from botocore.exceptions import BotoCoreError, ClientError

        key = self._key(course, name)
        md5 = base64.b64encode(hashlib.md5(data).digest()).decode("ascii")  # noqa: S324 (S3's integrity check)
        try:
            self._client.put_object(Bucket=self.bucket, Key=key, Body=data, ContentMD5=md5, ContentType=content_type,
                                    IfNoneMatch="*")
        except ClientError as error:
            if str(error.response.get("Error", {}).get("Code")) in ("PreconditionFailed", "412"):
                raise StoreError(f"s3://{self.bucket}/{key} exists already: it is written once and never replaced") \
                    from error
            raise self._fail("write", key, error) from error
        except BotoCoreError as error:
            raise self._fail("write", key, error) from error

    def read_object(self, course: str, name: str) -> bytes | None:
        return self._get(self._key(course, name))

    def list_names(self, course: str, folder: str = "") -> list[str]:
        from botocore.exceptions import BotoCoreError, ClientError

        base = self._key(course, "") + "/"
        prefix = base + (folder.strip("/") + "/" if folder else "")
        try:
            pages = self._client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix)
            return sorted(item["Key"][len(base):] for page in pages for item in page.get("Contents", []))
        except (ClientError, BotoCoreError) as error:
            raise self._fail("list", prefix, error) from error

    def audio_url(self, course: str, narration_id: str, expires_s: int = 3600) -> str:
        """A presigned GET for the clip's MP3, so a player streams it straight from the bucket."""
        return self._client.generate_presigned_url(
            "get_object", Params={"Bucket": self.bucket, "Key": self._key(course, f"{narration_id}.mp3")},
            ExpiresIn=expires_s,
        )

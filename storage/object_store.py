"""What Beam ``FileSystems`` cannot do on object stores: create an object only if it is absent,
write an empty S3 object, and check credentials before a run starts.

S3 (and S3-compatible stores) take ``If-None-Match: *`` on a put; GCS takes
``ifGenerationMatch=0``. Both fail the put when the object exists, which makes a lock safe
between machines. The client is built from the same pipeline options Beam's own S3 filesystem uses
(``--s3_endpoint_url``, ``--s3_access_key_id`` ...).
"""
from __future__ import annotations

import os
import threading
from typing import Optional

_options = None


def set_options(pipeline_options) -> None:
    global _options
    _options = pipeline_options


def _split(path: str):
    scheme, rest = path.split("://", 1)
    bucket, _, key = rest.partition("/")
    return scheme, bucket, key


_clients: dict = {}
_clients_lock = threading.Lock()


def s3_client():
    """One boto3 S3 client per set of options (clients are thread-safe; building one costs ~0.2 s of CPU)."""
    key = (_options_key(_options) if _options is not None else (),
           tuple(os.environ.get(v) for v in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
                                             "AWS_PROFILE", "AWS_DEFAULT_REGION", "AWS_REGION", "AWS_ENDPOINT_URL")))
    with _clients_lock:
        client = _clients.get(key)
    if client is None:
        client = _new_s3_client()
        with _clients_lock:
            client = _clients.setdefault(key, client)
    return client


def _new_s3_client():
    import boto3
    from apache_beam.options.pipeline_options import S3Options
    kw = {}
    if _options is not None:
        o = _options.view_as(S3Options)
        kw = {k: v for k, v in {
            "endpoint_url": o.s3_endpoint_url, "aws_access_key_id": o.s3_access_key_id,
            "aws_secret_access_key": o.s3_secret_access_key, "aws_session_token": o.s3_session_token,
            "region_name": o.s3_region_name, "verify": o.s3_verify, "use_ssl": not o.s3_disable_ssl,
        }.items() if v is not None}
    from botocore.config import Config
    return boto3.session.Session().client("s3", config=Config(retries={"max_attempts": 2},
                                                              connect_timeout=10, read_timeout=30), **kw)


def create_if_absent(path: str, data: bytes) -> bool:
    scheme, bucket, key = _split(path)
    if scheme == "s3":
        from botocore.exceptions import ClientError
        try:
            s3_client().put_object(Bucket=bucket, Key=key, Body=data, IfNoneMatch="*")
            return True
        except ClientError as e:
            code = e.response.get("Error", {}).get("Code", "")
            if code in ("PreconditionFailed", "412", "ConditionalRequestConflict"):
                return False
            raise
    if scheme == "gs":
        from google.api_core.exceptions import PreconditionFailed
        from google.cloud import storage
        blob = storage.Client().bucket(bucket).blob(key)
        try:
            blob.upload_from_string(data, if_generation_match=0)
            return True
        except PreconditionFailed:
            return False
    raise ValueError(f"no conditional create for {scheme}://")


def share_s3_clients() -> None:
    """Make Beam's S3 filesystem reuse one boto3 client per set of S3 options.

    Beam builds a new boto3 session and client for every filesystem call (an ``exists``, an
    ``open``, a ``delete``), which costs about 0.2 s of CPU each as botocore parses its service
    models again: most of a wave's publishing time on S3. boto3 clients are thread-safe, so one per
    option set is shared; the per-call download state stays on each wrapper as before.
    """
    try:
        from apache_beam.io.aws.clients.s3 import boto3_client
    except ImportError:  # Beam without its AWS extra: no S3 filesystem to speed up
        return
    original = boto3_client.Client.__init__
    if getattr(original, "_shares_clients", False):
        return
    clients = {}
    lock = threading.Lock()

    def init(self, options):
        key = _options_key(options)
        with lock:
            client = clients.get(key)
        if client is None:
            original(self, options)
            with lock:
                clients.setdefault(key, self.client)
            return
        self.client = client
        self._download_request, self._download_stream, self._download_pos = None, None, 0

    init._shares_clients = True
    boto3_client.Client.__init__ = init


def _options_key(options) -> tuple:
    from apache_beam.options.pipeline_options import PipelineOptions, S3Options
    names = ("s3_access_key_id", "s3_secret_access_key", "s3_session_token", "s3_endpoint_url", "s3_disable_ssl",
             "s3_region_name", "s3_api_version", "s3_verify")
    if isinstance(options, PipelineOptions):
        o = options.view_as(S3Options)
        return tuple(str(getattr(o, n, None)) for n in names)
    return tuple(str((options or {}).get(n)) for n in names)


def put_empty(path: str) -> None:
    """Create an empty S3 object (Beam's S3 writer cannot: it completes a multipart upload of no parts)."""
    _, bucket, key = _split(path)
    s3_client().put_object(Bucket=bucket, Key=key, Body=b"")


class NoCredentials(str):
    """A reason that is about the credentials themselves (every object of the store would fail)."""


def check_access(path: str) -> Optional[str]:
    """None when ``path``'s bucket can be listed with the credentials at hand, else a one-line reason
    (a ``NoCredentials`` when the credentials themselves are missing or refused)."""
    scheme, bucket, key = _split(path)
    if scheme == "s3":
        import botocore.exceptions as bx
        try:
            s3_client().list_objects_v2(Bucket=bucket, Prefix=key, MaxKeys=1)
        except (bx.NoCredentialsError, bx.PartialCredentialsError):
            return NoCredentials(credentials_hint(path))
        except bx.ClientError as e:
            code = e.response.get("Error", {}).get("Code", "")
            if code in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken"):
                return NoCredentials(f"{credentials_hint(path)} (the store answered {code})")
            if code == "AccessDenied":
                return f"access denied to s3://{bucket}: {credentials_hint(path)}"
            if code == "NoSuchBucket":
                return f"no such bucket: s3://{bucket}"
            return f"cannot list s3://{bucket}: {code or e}"
        except bx.EndpointConnectionError as e:
            return f"cannot reach the S3 endpoint for {path}: {e}"
        return None
    if scheme == "gs":
        try:
            from google.cloud import storage
        except ImportError:
            return NoCredentials("gs:// needs Google Cloud's client libraries: pip install 'apache-beam[gcp]==2.77.0'")
        try:
            next(iter(storage.Client().list_blobs(bucket, prefix=key, max_results=1)), None)
        except Exception as e:
            name = type(e).__name__
            if name in ("DefaultCredentialsError", "RefreshError", "Unauthorized"):
                return NoCredentials(f"{credentials_hint(path)} ({name})")
            if name == "Forbidden":
                return f"access denied to gs://{bucket}: {credentials_hint(path)}"
            return f"cannot list gs://{bucket}: {name}: {e}"
        return None
    return None


def credentials_hint(path: str) -> str:
    scheme = path.split("://", 1)[0]
    if scheme == "s3":
        return (f"no usable S3 credentials for {path}: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or "
                f"AWS_PROFILE), or pass --s3_access_key_id/--s3_secret_access_key; for an S3-compatible "
                f"store also --s3_endpoint_url")
    if scheme == "gs":
        return (f"no usable Google Cloud credentials for {path}: run 'gcloud auth application-default "
                f"login' or set GOOGLE_APPLICATION_CREDENTIALS to a service-account key file")
    return f"no usable credentials for {path}"


def replace_if_same(path: str, expected: bytes, data: bytes) -> bool:
    """Put ``data`` at ``path`` only if the object still holds ``expected`` (ETag / generation precondition)."""
    scheme, bucket, key = _split(path)
    if scheme == "s3":
        from botocore.exceptions import ClientError
        client = s3_client()
        try:
            got = client.get_object(Bucket=bucket, Key=key)
            body, etag = got["Body"].read(), got["ETag"]
        except ClientError as e:
            if e.response.get("Error", {}).get("Code", "") in ("NoSuchKey", "404"):
                return False
            raise
        if body != expected:
            return False
        try:
            client.put_object(Bucket=bucket, Key=key, Body=data, IfMatch=etag)
            return True
        except ClientError as e:
            code = e.response.get("Error", {}).get("Code", "")
            if code in ("PreconditionFailed", "412", "ConditionalRequestConflict", "NoSuchKey"):
                return False
            raise
    if scheme == "gs":
        from google.api_core.exceptions import NotFound, PreconditionFailed
        from google.cloud import storage
        blob = storage.Client().bucket(bucket).get_blob(key)
        if blob is None:
            return False
        try:
            if blob.download_as_bytes(if_generation_match=blob.generation) != expected:
                return False
            blob.upload_from_string(data, if_generation_match=blob.generation)
            return True
        except (PreconditionFailed, NotFound):
            return False
    raise ValueError(f"no conditional replace for {scheme}://")

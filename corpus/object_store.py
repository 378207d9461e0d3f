"""What Beam ``FileSystems`` cannot do on object stores: create an object only if it is absent,
and check credentials before a run starts.

S3 (and S3-compatible stores) take ``If-None-Match: *`` on a put; GCS takes
``ifGenerationMatch=0``. Both fail the put when the object exists, which makes a lock safe
between machines. The client is built from the same pipeline options Beam's own S3 filesystem uses
(``--s3_endpoint_url``, ``--s3_access_key_id`` ...).
"""
from __future__ import annotations

from typing import Optional

_options = None


def set_options(pipeline_options) -> None:
    global _options
    _options = pipeline_options


def _split(path: str):
    scheme, rest = path.split("://", 1)
    bucket, _, key = rest.partition("/")
    return scheme, bucket, key


def s3_client():
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


class NoCredentials(str):
    """A reason that is about the credentials themselves (every object of the store would fail)."""


def check_access(path: str) -> Optional[str]:
    """None when ``path``'s bucket can be listed with the credentials at hand, else a one-line reason
    (a ``NoCredentials`` when the credentials themselves are missing or refused)."""
    scheme, bucket, key = _split(path)
    from corpus.fs import credentials_hint
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

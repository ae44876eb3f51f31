"""A ZIP archive in an S3 bucket (``s3://bucket/key``), read by ranged GETs through boto3.

Credentials, region and endpoint come from boto3's usual places (``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, ``AWS_ENDPOINT_URL``, ``~/.aws``, instance roles) unless
``storage_options`` names them, as s3fs takes them: ``key``, ``secret``, ``token``,
``endpoint_url``, ``anon`` (unsigned requests to a public bucket), ``client_kwargs`` (e.g.
``{"region_name": ...}``). boto3 is an optional dependency (``pip install tiled-archive[s3]``).
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import closing
from typing import Any

from ...rules.problems import ArchiveError
from .remote import Answer, Body, RemoteFile

#: The pieces an answer's body is read in.
CHUNK = 1 << 20


class S3File(RemoteFile):
    """An S3 object read by range requests."""

    def __init__(self, url: str, storage_options: Mapping[str, Any] | None = None):
        try:
            import boto3
            from botocore import UNSIGNED
            from botocore.config import Config
        except ImportError:
            raise ArchiveError(
                "TA-E930",
                url,
                "reading s3:// needs boto3, which is not installed",
                hint="pip install 'tiled-archive[s3]' (or boto3).",
            ) from None
        options = dict(storage_options or {})
        self.bucket, _, self.key = url.removeprefix("s3://").partition("/")
        session = boto3.session.Session(
            aws_access_key_id=options.get("key"),
            aws_secret_access_key=options.get("secret"),
            aws_session_token=options.get("token"),
        )
        config = Config(signature_version=UNSIGNED) if options.get("anon") else None
        self._client = session.client(
            "s3",
            endpoint_url=options.get("endpoint_url"),
            config=config,
            **options.get("client_kwargs", {}),
        )
        super().__init__(url)

    def answer(self, asked: str, body: Body) -> Answer:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            got = self._client.get_object(Bucket=self.bucket, Key=self.key, Range=asked)
        except ClientError as err:
            status = err.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
            return Answer(status, err.response.get("Error", {}).get("Code", ""), None, None, None)
        except BotoCoreError as err:
            raise self.not_answered(
                f"cannot read it: {type(err).__name__}: {err}",
                "Check the endpoint, the network and the credentials (AWS_* variables, "
                "~/.aws, or storage_options key/secret/endpoint_url; anon=True for a public "
                "bucket).",
            ) from None
        status = got["ResponseMetadata"]["HTTPStatusCode"]
        with closing(got["Body"]) as stream:  # the StreamingBody (entering it gives its own)
            length = body.take(stream.iter_chunks(CHUNK)) if status == 206 else 0
        modified = got.get("LastModified")
        return Answer(
            status,
            "",
            got.get("ContentRange"),
            got.get("ETag"),
            modified.isoformat() if modified is not None else None,
            length,
        )

    def close(self) -> None:
        super().close()
        client = getattr(self, "_client", None)
        if client is not None:
            client.close()

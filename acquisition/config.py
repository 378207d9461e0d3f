"""Settings of acquisition (expansion, downloads, the staging store), validated once."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from acquisition.safety import NetworkPolicy
from schemas.settings import SettingError


@dataclass(frozen=True)
class AcquireConfig:
    staging_dir: str
    max_download_mb: float = 2048.0
    max_duration_s: Optional[float] = None
    http_timeout_s: float = 30.0
    download_timeout_s: float = 3600.0
    http_retries: int = 3
    retry_backoff_s: float = 0.5
    allow_private_networks: Optional[str] = None  # None: public only; "all"; or "CIDR,CIDR"
    max_items_per_source: int = 1000
    max_listed_items: int = 100_000
    max_hours_total: Optional[float] = None
    ytdlp_format: str = "bestaudio/best"
    min_download_kbps: Optional[float] = None  # a download slower than this (after its first seconds) ends, retryable
    id_key: str = ""  # the corpus's identity key (hex): ids of URLs with secrets are keyed with it

    def validate(self) -> "AcquireConfig":
        for name in ("max_download_mb", "http_timeout_s", "download_timeout_s", "max_duration_s", "max_hours_total"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise SettingError(name, f"must be > 0, got {value:g}")
        if self.min_download_kbps is not None and not self.min_download_kbps > 0:
            raise SettingError("min_download_kbps", f"must be > 0, got {self.min_download_kbps:g}")
        if self.http_retries < 0:
            raise SettingError("http_retries", f"must be >= 0, got {self.http_retries}")
        if self.max_items_per_source < 1:
            raise SettingError("max_items_per_source", f"must be >= 1, got {self.max_items_per_source}")
        if self.max_listed_items < self.max_items_per_source:
            raise SettingError("max_listed_items", f"({self.max_listed_items}) must be at least {{0}} "
                               f"({self.max_items_per_source})", "max_items_per_source")
        try:
            self.policy
        except ValueError as e:
            raise SettingError("allow_private_networks", str(e).split(": ", 1)[-1]) from None
        return self

    @property
    def policy(self) -> NetworkPolicy:
        return NetworkPolicy.parse(self.allow_private_networks)

    @property
    def max_bytes(self) -> int:
        return int(self.max_download_mb * 1024 * 1024)

"""Settings of acquisition (expansion, downloads, the staging store), validated once."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from acquisition.safety import NetworkPolicy


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

    def validate(self) -> "AcquireConfig":
        if self.max_download_mb <= 0:
            raise ValueError(f"--max_download_mb must be > 0, got {self.max_download_mb:g}")
        if self.http_timeout_s <= 0:
            raise ValueError(f"--http_timeout_s must be > 0, got {self.http_timeout_s:g}")
        if self.download_timeout_s <= 0:
            raise ValueError(f"--download_timeout_s must be > 0, got {self.download_timeout_s:g}")
        if self.http_retries < 0:
            raise ValueError(f"--http_retries must be >= 0, got {self.http_retries}")
        if self.max_items_per_source < 1:
            raise ValueError(f"--max_items_per_source must be >= 1, got {self.max_items_per_source}")
        if self.max_listed_items < self.max_items_per_source:
            raise ValueError(f"--max_listed_items ({self.max_listed_items}) must be at least "
                             f"--max_items_per_source ({self.max_items_per_source})")
        if self.max_duration_s is not None and self.max_duration_s <= 0:
            raise ValueError(f"--max_duration_s must be > 0, got {self.max_duration_s:g}")
        if self.max_hours_total is not None and self.max_hours_total <= 0:
            raise ValueError(f"--max_hours_total must be > 0, got {self.max_hours_total:g}")
        self.policy  # parses, raising on a bad network list
        return self

    @property
    def policy(self) -> NetworkPolicy:
        return NetworkPolicy.parse(self.allow_private_networks)

    @property
    def max_bytes(self) -> int:
        return int(self.max_download_mb * 1024 * 1024)

"""The server's settings, read from `conf/serve.yaml` (every value lives there; these classes only type them)."""

from __future__ import annotations

from dataclasses import dataclass

from omegaconf import DictConfig


@dataclass(frozen=True)
class Limits:
    """Bounds on what one request may carry (`limits` in conf/serve.yaml)."""

    max_body_bytes: int
    max_images: int
    max_image_bytes: int
    max_image_pixels: int
    max_prompt_chars: int
    max_prompt_tokens: int
    max_new_tokens: int


@dataclass(frozen=True)
class ImageSources:
    """Where images may come from and how unnamed chat images are assigned to OCT/CFP (`images`)."""

    default_order: tuple[str, ...]
    local_root: str | None
    allow_remote: bool
    remote_timeout_s: float


@dataclass(frozen=True)
class Batching:
    """The generation queue (`batching`): batch size, how long to wait for companions, queue bound."""

    max_batch_size: int
    window_ms: float
    max_queue: int
    retry_after_s: int


@dataclass(frozen=True)
class ServeSettings:
    """Everything `create_app` needs besides the engine."""

    model_name: str
    api_key: str | None
    cors_origins: tuple[str, ...]
    limits: Limits
    images: ImageSources
    batching: Batching
    page_enabled: bool
    page_modalities: tuple[str, ...]

    @classmethod
    def from_config(cls, cfg: DictConfig, api_key: str | None) -> ServeSettings:
        """Settings from a composed `serve` config; the API key comes from the flag or environment, never the
        config (Hydra saves configs into the run folder)."""
        images = cfg.images
        return cls(
            model_name=str(cfg.model_name),
            api_key=api_key or None,
            cors_origins=tuple(cfg.cors_origins or ()),
            limits=Limits(**{key: int(value) for key, value in cfg.limits.items()}),
            images=ImageSources(
                default_order=tuple(images.default_order),
                local_root=images.local_root,
                allow_remote=bool(images.allow_remote),
                remote_timeout_s=float(images.remote_timeout_s),
            ),
            batching=Batching(
                max_batch_size=int(cfg.batching.max_batch_size),
                window_ms=float(cfg.batching.window_ms),
                max_queue=int(cfg.batching.max_queue),
                retry_after_s=int(cfg.batching.retry_after_s),
            ),
            page_enabled=bool(cfg.page.enabled),
            page_modalities=tuple(cfg.page.biomarker_modalities),
        )

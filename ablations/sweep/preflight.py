"""A sweep spec's cheap checks, before torch is imported: its top-level keys, the variant merged in, the study's
name and the storage URL's form (``preflight``); ``ablations.sweep.spec.build_spec`` takes the result."""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from ablations.sweep.fields import fail, keys
from ablations.sweep.storage import check_storage_url

TOP_KEYS = ("name", "description", "paper", "base", "baseline", "space", "objectives", "sampler", "pruner",
            "budget", "seeds", "storage", "heartbeat", "wandb", "variants")


def _merge(a: dict, b: dict) -> dict:
    out = copy.deepcopy(a)
    for k, v in b.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else copy.deepcopy(v)
    return out


@dataclass(frozen=True)
class Checked:
    """A spec mapping past the cheap checks (``preflight``): its variant merged in, its study and storage."""

    raw: dict
    study: str
    storage: str
    output_dir: str
    variant: str | None = None


def preflight(raw: Any, variant: str | None = None) -> Checked:
    """The cheap checks, before torch is imported: top-level keys, the variant, the name, the storage URL's form.

    The variant is merged here, once; ``build_spec`` takes the result.
    """
    raw = keys("", raw, TOP_KEYS)
    variants = raw.get("variants") or {}
    if variant is not None:
        if not isinstance(variants, dict) or variant not in variants:
            raise fail("--variant", variant, f"this spec has: {', '.join(variants) or 'no variants'}")
        raw = _merge(raw, keys(f"variants.{variant}", variants[variant], tuple(k for k in TOP_KEYS if k != "variants")))
    name = raw.get("name")
    if not isinstance(name, str) or not name or any(c in name for c in " /\\:"):
        raise fail("name", name, "give the study a name without spaces, slashes or colons")
    base = raw.get("base") if isinstance(raw.get("base"), dict) else {}
    storage = raw.get("storage")
    return Checked(raw=raw, study=f"{variant}-{name}" if variant else name,
                   storage=check_storage_url(storage) if storage else "",
                   output_dir=str(base.get("output_dir", "runs")), variant=variant)

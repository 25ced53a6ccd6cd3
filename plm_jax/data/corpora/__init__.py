"""Packaged corpora as TFDS builders; importing this package registers them with TFDS."""

from plm_jax.data.corpora.offline_mix import PlmOfflineMix  # noqa: F401  (registers the builder)
from plm_jax.data.corpora.rotten_tomatoes import PlmRottenTomatoes  # noqa: F401
from plm_jax.data.corpora.wiki_offline import PlmWikiOffline

__all__ = ["PlmWikiOffline"]

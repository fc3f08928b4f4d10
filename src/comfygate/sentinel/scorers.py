"""The learned scorers a sentinel may use, together: a CLIP model and the heads that read its embeddings."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .clip import ClipScorer, ModelCache
from .errors import ScorerUnavailable
from .heads import EmbeddingHead

__all__ = ["Scorers"]


@dataclass
class Scorers:
    """CLIP (prompt alignment, and the embeddings the heads read), an aesthetic head and an NSFW head.

    Any may be None: the checks that need it then report ``not_run``. A head needs the CLIP model whose
    embeddings it was trained on, so a head without ``clip`` is refused. ``batch_size`` bounds how many
    images go through CLIP in one forward pass.
    """

    clip: ClipScorer | None = None
    aesthetic: EmbeddingHead | None = None
    nsfw: EmbeddingHead | None = None
    batch_size: int = 16

    def __post_init__(self) -> None:
        if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ValueError(f"batch_size must be an int >= 1, got {self.batch_size!r}")
        for kind, head in (("aesthetic", self.aesthetic), ("nsfw", self.nsfw)):
            if head is None:
                continue
            if head.kind != kind:
                raise ValueError(f"the {kind} scorer must be a {kind} head, got a {head.kind} head ({head.path})")
            if self.clip is None:
                raise ScorerUnavailable(
                    f"{kind} head {str(head.path)!r} scores CLIP image embeddings, but no CLIP model is configured"
                )

    @classmethod
    def from_paths(
        cls,
        clip_model: str = "",
        clip_weights: Path | None = None,
        aesthetic_weights: Path | None = None,
        nsfw_weights: Path | None = None,
        device: str = "cpu",
        cache: ModelCache | None = None,
        batch_size: int = 16,
    ) -> Scorers:
        """Scorers from settings: each one whose path is given (CLIP needs both name and weights).

        The heads are read now (small files; errors name them); CLIP loads lazily, or in ``load()``.
        ``cache`` is the worker's model pool, shared by all of them.
        """
        if bool(clip_model) != (clip_weights is not None):
            given, missing = ("model name", "weights file") if clip_model else ("weights file", "model name")
            raise ScorerUnavailable(f"a CLIP {given} is configured without a {missing}; give both or neither")
        clip = ClipScorer(clip_model, Path(clip_weights), device, cache=cache) if clip_weights is not None else None
        heads = {
            kind: EmbeddingHead.from_file(path, kind=kind, device=device, cache=cache) if path is not None else None
            for kind, path in (("aesthetic", aesthetic_weights), ("nsfw", nsfw_weights))
        }
        return cls(clip=clip, aesthetic=heads["aesthetic"], nsfw=heads["nsfw"], batch_size=batch_size)

    @property
    def heads(self) -> list[EmbeddingHead]:
        """The configured heads, aesthetic first."""
        return [head for head in (self.aesthetic, self.nsfw) if head is not None]

    def load(self) -> None:
        """Load every configured model now and check the heads fit CLIP (a worker calls this at start).

        Raises ``ScorerUnavailable`` naming the file that cannot be used.
        """
        if self.clip is None:
            return
        self.clip.load()
        for head in self.heads:
            head.check_input_dim(self.clip.embed_dim)
            head.load()

"""QualiCLIP's antonym prompts and the QualiCLIP+ prompt learner (CoOp-style context tokens)."""

from __future__ import annotations

import torch
from torch import nn

#: The seven (positive, negative) prompt pairs, positive first, in the order of the stored features.
PROMPT_PAIRS: tuple[tuple[str, str], ...] = (
    ("Good photo.", "Bad photo."),
    ("Sharp image.", "Blurry image."),
    ("Sharp edges.", "Blurry edges."),
    ("High-resolution image.", "Low-resolution image."),
    ("Noise-free image.", "Noisy image."),
    ("High-quality image.", "Low-quality image."),
    ("Good picture.", "Bad picture."),
)

#: Flat list of the 14 prompts, positive and negative interleaved (the layout of ``prompts_features``).
PROMPTS: tuple[str, ...] = tuple(p for pair in PROMPT_PAIRS for p in pair)


class PromptLearner(nn.Module):
    """Learned context tokens around each prompt's words, encoded by CLIP's frozen text tower.

    The layout is pyiqa's QualiCLIP+ (``prompt_learner.ctx`` [P, n_ctx, D], ``token_prefix`` [P, 1, D] and
    ``token_suffix`` [P, 77 - 1 - n_ctx, D] for P = 14 prompts): the first ``n_ctx // 2`` context tokens go
    before the prompt's words, the rest after them.

    Args:
        tokenized: ``[P, 77]`` token ids of ``"X " * n_ctx + prompt`` (used only for the end-of-text index).
        name_lengths: number of BPE tokens of each prompt's words.
        n_ctx: number of learned context tokens.
        width: text transformer width.
    """

    def __init__(self, tokenized: torch.Tensor, name_lengths: list[int], n_ctx: int = 16, width: int = 512) -> None:
        super().__init__()
        n_prompts, context = tokenized.shape
        self.n_ctx = n_ctx
        self.name_lengths = list(name_lengths)
        self.ctx = nn.Parameter(torch.zeros(n_prompts, n_ctx, width))
        self.register_buffer("token_prefix", torch.zeros(n_prompts, 1, width))
        self.register_buffer("token_suffix", torch.zeros(n_prompts, context - 1 - n_ctx, width))
        self.register_buffer("eot_index", tokenized.argmax(dim=-1), persistent=False)

    def prompt_embeddings(self) -> torch.Tensor:
        """``[P, 77, D]`` token embeddings: prefix, ctx[:h], words, ctx[h:], rest of the suffix."""
        half = self.n_ctx // 2
        rows = []
        for i, length in enumerate(self.name_lengths):
            suffix = self.token_suffix[i]
            rows.append(
                torch.cat([self.token_prefix[i], self.ctx[i, :half], suffix[:length], self.ctx[i, half:], suffix[length:]])
            )
        return torch.stack(rows)

    def forward(self, clip: nn.Module) -> torch.Tensor:
        """Text features ``[P, embed_dim]`` (not normalised) through ``clip``'s frozen text tower."""
        x = self.prompt_embeddings().to(clip.positional_embedding.dtype) + clip.positional_embedding
        x = clip.transformer(x, attn_mask=clip.attn_mask)
        x = clip.ln_final(x)
        return x[torch.arange(x.shape[0], device=x.device), self.eot_index] @ clip.text_projection


def build_prompt_learner(clip: nn.Module, prompts: tuple[str, ...], n_ctx: int = 16, init_std: float = 0.02,
                         seed: int = 0) -> PromptLearner:
    """A fresh :class:`PromptLearner` for ``prompts`` whose fixed tokens (start, the prompt's words, end and
    padding) are ``clip``'s own token embeddings and whose context starts as N(0, ``init_std``) (CoOp's
    initialisation), drawn from ``seed``."""
    from open_clip.tokenizer import SimpleTokenizer, tokenize

    tokenized = tokenize([" ".join(["X"] * n_ctx) + " " + p for p in prompts])
    name_lengths = [len(SimpleTokenizer().encode(p)) for p in prompts]
    learner = PromptLearner(tokenized, name_lengths, n_ctx=n_ctx, width=clip.token_embedding.weight.shape[1])
    with torch.no_grad():
        embedded = clip.token_embedding(tokenized.to(clip.token_embedding.weight.device)).float().cpu()
        learner.token_prefix.copy_(embedded[:, :1])
        learner.token_suffix.copy_(embedded[:, 1 + n_ctx :])
        learner.ctx.copy_(init_std * torch.randn(learner.ctx.shape, generator=torch.Generator().manual_seed(seed)))
    return learner

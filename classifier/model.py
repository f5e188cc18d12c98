"""The network: a 1D ResNet front end with multi-head self-attention over its feature sequence."""

from __future__ import annotations

import torch
from torch import nn

from classifier.constants import CLASSES, SEGMENT_LEN
from classifier.preprocess import INPUT_CHANNELS


class ResBlock(nn.Module):
    """Two convolutions with a projected shortcut when shape changes."""

    def __init__(self, c_in: int, c_out: int, stride: int, kernel: int = 7, dropout: float = 0.1) -> None:
        super().__init__()
        pad = kernel // 2
        self.conv1 = nn.Conv1d(c_in, c_out, kernel, stride=stride, padding=pad, bias=False)
        self.bn1 = nn.BatchNorm1d(c_out)
        self.conv2 = nn.Conv1d(c_out, c_out, kernel, padding=pad, bias=False)
        self.bn2 = nn.BatchNorm1d(c_out)
        self.drop = nn.Dropout(dropout)
        self.short: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.short = nn.Sequential(nn.Conv1d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm1d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(self.drop(y)))
        return torch.relu(y + self.short(x))


class ECGNet(nn.Module):
    """(batch, 2 leads + rhythm channel, SEGMENT_LEN samples at MODEL_FS) -> (batch, len(CLASSES)) logits."""

    def __init__(
        self,
        widths: tuple[int, ...] = (16, 32, 64, 128, 144),
        heads: int = 4,
        dropout: float = 0.2,
        n_classes: int = len(CLASSES),
    ) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv1d(INPUT_CHANNELS, widths[0], 15, stride=2, padding=7, bias=False),
            nn.BatchNorm1d(widths[0]),
            nn.ReLU(),
        )
        blocks: list[nn.Module] = []
        c = widths[0]
        for w in widths[1:]:
            blocks.append(ResBlock(c, w, stride=2, dropout=dropout / 2))
            blocks.append(ResBlock(w, w, stride=1, dropout=dropout / 2))
            c = w
        self.body = nn.Sequential(*blocks)
        self.tokens = SEGMENT_LEN // (2 ** len(widths))
        self.pos = nn.Parameter(torch.zeros(1, self.tokens, c))
        self.attn = nn.MultiheadAttention(c, heads, dropout=dropout, batch_first=True)
        self.norm1 = nn.LayerNorm(c)
        self.ff = nn.Sequential(nn.Linear(c, 2 * c), nn.GELU(), nn.Dropout(dropout), nn.Linear(2 * c, c))
        self.norm2 = nn.LayerNorm(c)
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(2 * c, n_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.body(self.stem(x)).transpose(1, 2)  # (B, T, C)
        if h.shape[1] == self.pos.shape[1]:
            h = h + self.pos
        a, _ = self.attn(h, h, h, need_weights=False)
        h = self.norm1(h + a)
        h = self.norm2(h + self.ff(h))
        pooled = torch.cat([h.mean(dim=1), h.amax(dim=1)], dim=1)
        out: torch.Tensor = self.head(pooled)
        return out


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())

"""Hand-written model families for the zoo: the building blocks pruning has to get right.

Each class is a small, complete model; :mod:`netsculpt.testing.zoo` instantiates them with
fixed seeds and example inputs. Widths are kept small so every model runs in milliseconds.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def conv_bn(cin: int, cout: int, k: int = 3, stride: int = 1, groups: int = 1) -> nn.Sequential:
    """Conv2d (no bias) followed by BatchNorm2d, padded to keep the spatial size at stride 1."""
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
    )


def randomise_norms(model: nn.Module) -> nn.Module:
    """Give every norm layer non-trivial statistics and affine weights (as after training)."""
    with torch.no_grad():
        for m in model.modules():
            if not isinstance(m, (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm)):
                continue
            stats: list[tuple[torch.Tensor | None, float, float]] = [
                (getattr(m, "running_mean", None), -0.2, 0.2),
                (getattr(m, "running_var", None), 0.5, 1.5),
                (m.weight, 0.5, 1.5),
                (m.bias, -0.2, 0.2),
            ]
            for tensor, low, high in stats:
                if tensor is not None:
                    tensor.uniform_(low, high)
    return model


class ClassifierHead(nn.Module):
    """Global average pooling, flatten and a linear classifier."""

    def __init__(self, cin: int, classes: int = 10) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(x), 1))


class MLP(nn.Module):
    """Three linear layers with ReLU."""

    def __init__(self, cin: int = 16, hidden: int = 64, classes: int = 10) -> None:
        super().__init__()
        self.fc1 = nn.Linear(cin, hidden)
        self.fc2 = nn.Linear(hidden, hidden)
        self.fc3 = nn.Linear(hidden, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc3(F.relu(self.fc2(F.relu(self.fc1(x)))))


class ResidualMLPBlock(nn.Module):
    """Pre-norm residual feed-forward block: ``x + fc2(gelu(fc1(norm(x))))``."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.fc2(F.gelu(self.fc1(self.norm(x))))


class ResidualMLP(nn.Module):
    """Input projection, two residual feed-forward blocks sharing one width, a head."""

    def __init__(self, cin: int = 16, dim: int = 32, hidden: int = 64, classes: int = 10) -> None:
        super().__init__()
        self.proj = nn.Linear(cin, dim)
        self.blocks = nn.Sequential(ResidualMLPBlock(dim, hidden), ResidualMLPBlock(dim, hidden))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.norm(self.blocks(self.proj(x))))


class PlainCNN(nn.Module):
    """Conv-BN-ReLU stack with a stride-2 stage and a pooled linear head."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            conv_bn(3, 16),
            nn.ReLU(),
            conv_bn(16, 32, stride=2),
            nn.ReLU(),
            conv_bn(32, 32),
            nn.ReLU(),
        )
        self.head = ClassifierHead(32)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class FlattenCNN(nn.Module):
    """VGG-style: convs, max-pooling, then ``flatten`` of a 4x4 map into a linear layer."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = conv_bn(3, 16)
        self.conv2 = conv_bn(16, 24)
        self.fc1 = nn.Linear(24 * 4 * 4, 32)
        self.fc2 = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        return self.fc2(F.relu(self.fc1(torch.flatten(x, 1))))


class BasicBlock(nn.Module):
    """ResNet basic block; a 1x1 projection shortcut when the shape changes."""

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = conv_bn(cin, cout, stride=stride)
        self.conv2 = conv_bn(cout, cout)
        self.shortcut = (
            conv_bn(cin, cout, k=1, stride=stride) if stride != 1 or cin != cout else nn.Identity()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.conv2(F.relu(self.conv1(x))) + self.shortcut(x))


class Bottleneck(nn.Module):
    """ResNet/ResNeXt bottleneck (1x1, grouped 3x3, 1x1) with a projection shortcut."""

    def __init__(self, cin: int, mid: int, cout: int, stride: int = 1, groups: int = 1) -> None:
        super().__init__()
        self.conv1 = conv_bn(cin, mid, k=1)
        self.conv2 = conv_bn(mid, mid, stride=stride, groups=groups)
        self.conv3 = conv_bn(mid, cout, k=1)
        self.shortcut = (
            conv_bn(cin, cout, k=1, stride=stride) if stride != 1 or cin != cout else nn.Identity()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.conv1(x))
        y = F.relu(self.conv2(y))
        return F.relu(self.conv3(y) + self.shortcut(x))


class ResNetBasic(nn.Module):
    """Stem, an identity basic block, a stride-2 basic block with projection, a head."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = conv_bn(3, 16)
        self.layer1 = BasicBlock(16, 16)
        self.layer2 = BasicBlock(16, 32, stride=2)
        self.head = ClassifierHead(32)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.layer2(self.layer1(F.relu(self.stem(x)))))


class ResNetBottleneck(nn.Module):
    """Stem and two bottleneck blocks with projection shortcuts, the second with stride 2."""

    def __init__(self, groups: int = 1, width: int = 8) -> None:
        super().__init__()
        self.stem = conv_bn(3, 16)
        self.layer1 = Bottleneck(16, width, 32, groups=groups)
        self.layer2 = Bottleneck(32, 2 * width, 64, stride=2, groups=groups)
        self.layer3 = Bottleneck(64, 2 * width, 64, groups=groups)
        self.head = ClassifierHead(64)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.stem(x))
        return self.head(self.layer3(self.layer2(self.layer1(x))))


class DenseLayer(nn.Module):
    """DenseNet layer: BN-ReLU-conv producing ``growth`` channels, concatenated to the input."""

    def __init__(self, cin: int, growth: int) -> None:
        super().__init__()
        self.norm = nn.BatchNorm2d(cin)
        self.conv = nn.Conv2d(cin, growth, 3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, self.conv(F.relu(self.norm(x)))], dim=1)


class DenseNet(nn.Module):
    """Stem, three dense layers (growth 8), a 1x1 transition with pooling, a head."""

    def __init__(self, stem: int = 16, growth: int = 8) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, stem, 3, padding=1, bias=False)
        self.block = nn.Sequential(*(DenseLayer(stem + i * growth, growth) for i in range(3)))
        width = stem + 3 * growth
        self.transition = nn.Sequential(
            nn.BatchNorm2d(width), nn.ReLU(), nn.Conv2d(width, 24, 1, bias=False), nn.AvgPool2d(2)
        )
        self.head = ClassifierHead(24)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.transition(self.block(self.stem(x))))


class InceptionBlock(nn.Module):
    """Four parallel branches (1x1; 1x1->3x3; 1x1->5x5; pool->1x1) concatenated on channels."""

    def __init__(self, cin: int) -> None:
        super().__init__()
        self.b1 = conv_bn(cin, 8, k=1)
        self.b2 = nn.Sequential(conv_bn(cin, 8, k=1), nn.ReLU(), conv_bn(8, 12))
        self.b3 = nn.Sequential(conv_bn(cin, 4, k=1), nn.ReLU(), conv_bn(4, 8, k=5))
        self.b4 = nn.Sequential(nn.MaxPool2d(3, stride=1, padding=1), conv_bn(cin, 4, k=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(torch.cat([self.b1(x), self.b2(x), self.b3(x), self.b4(x)], dim=1))


class Inception(nn.Module):
    """Stem, two inception blocks (32 channels out each), a head."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = conv_bn(3, 16)
        self.block1 = InceptionBlock(16)
        self.block2 = InceptionBlock(32)
        self.head = ClassifierHead(32)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.block2(self.block1(F.relu(self.stem(x)))))


class MobileNetV1(nn.Module):
    """Depthwise-separable convolutions: depthwise 3x3 then pointwise 1x1."""

    def __init__(self) -> None:
        super().__init__()

        def separable(cin: int, cout: int, stride: int) -> nn.Sequential:
            return nn.Sequential(
                conv_bn(cin, cin, stride=stride, groups=cin),
                nn.ReLU6(),
                conv_bn(cin, cout, k=1),
                nn.ReLU6(),
            )

        self.stem = nn.Sequential(conv_bn(3, 16, stride=2), nn.ReLU6())
        self.features = nn.Sequential(
            separable(16, 32, 1), separable(32, 64, 2), separable(64, 64, 1)
        )
        self.head = ClassifierHead(64)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(self.stem(x)))


class InvertedResidual(nn.Module):
    """MobileNetV2 block: expand 1x1, depthwise 3x3, linear project 1x1; residual if same shape."""

    def __init__(self, cin: int, cout: int, stride: int = 1, expand: int = 4) -> None:
        super().__init__()
        hidden = cin * expand
        self.use_residual = stride == 1 and cin == cout
        self.block = nn.Sequential(
            conv_bn(cin, hidden, k=1), nn.ReLU6(),
            conv_bn(hidden, hidden, stride=stride, groups=hidden), nn.ReLU6(),
            conv_bn(hidden, cout, k=1),
        )  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.block(x)
        return x + y if self.use_residual else y


class MobileNetV2(nn.Module):
    """Stem, three inverted residual blocks (two with residuals), a 1x1 expansion, a head."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(conv_bn(3, 16, stride=2), nn.ReLU6())
        self.features = nn.Sequential(
            InvertedResidual(16, 16), InvertedResidual(16, 24, stride=2), InvertedResidual(24, 24)
        )
        self.last = nn.Sequential(conv_bn(24, 64, k=1), nn.ReLU6())
        self.head = ClassifierHead(64)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.last(self.features(self.stem(x))))


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """ShuffleNet channel shuffle through view/transpose/reshape."""
    b, c, h, w = x.shape
    return x.view(b, groups, c // groups, h, w).transpose(1, 2).reshape(b, c, h, w)


class ShuffleUnit(nn.Module):
    """ShuffleNetV2 unit: split channels in two, transform one half, concat, shuffle.

    With ``stride=2`` both halves see the whole input (the downsampling unit).
    """

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.stride = stride
        half = cout // 2
        branch_in = cin if stride == 2 else cin // 2
        self.branch2 = nn.Sequential(
            conv_bn(branch_in, half, k=1), nn.ReLU(),
            conv_bn(half, half, stride=stride, groups=half),
            conv_bn(half, half, k=1), nn.ReLU(),
        )  # fmt: skip
        if stride == 2:
            self.branch1 = nn.Sequential(
                conv_bn(cin, cin, stride=2, groups=cin), conv_bn(cin, half, k=1), nn.ReLU()
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 2:
            out = torch.cat([self.branch1(x), self.branch2(x)], dim=1)
        else:
            x1, x2 = x.chunk(2, dim=1)
            out = torch.cat([x1, self.branch2(x2)], dim=1)
        return channel_shuffle(out, 2)


class ShuffleNetV2(nn.Module):
    """Stem, a downsampling shuffle unit, two split-and-shuffle units, a head."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(conv_bn(3, 24), nn.ReLU())
        self.stage = nn.Sequential(
            ShuffleUnit(24, 48, stride=2), ShuffleUnit(48, 48), ShuffleUnit(48, 48)
        )
        self.head = ClassifierHead(48)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.stage(self.stem(x)))


class SqueezeExcite(nn.Module):
    """Squeeze-excitation: pooled channel descriptor -> bottleneck MLP -> sigmoid gate."""

    def __init__(self, channels: int, reduced: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(channels, reduced)
        self.fc2 = nn.Linear(reduced, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c = x.shape[:2]
        s = torch.sigmoid(self.fc2(F.relu(self.fc1(x.mean(dim=(2, 3))))))
        return x * s.view(b, c, 1, 1)


class SENet(nn.Module):
    """Residual blocks with squeeze-excitation on the residual branch."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = conv_bn(3, 32)
        self.conv1 = conv_bn(32, 32)
        self.se1 = SqueezeExcite(32, 8)
        self.conv2 = conv_bn(32, 32)
        self.se2 = SqueezeExcite(32, 8)
        self.head = ClassifierHead(32)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.stem(x))
        x = F.relu(x + self.se1(self.conv1(x)))
        x = F.relu(x + self.se2(self.conv2(x)))
        return self.head(x)


class SelfAttention(nn.Module):
    """Multi-head self-attention with separate q/k/v projections, head reshapes and SDPA."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.head_dim = dim // heads
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        self.out = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape

        # -1 heads (as in transformers' Llama): the module keeps working when heads are removed
        def split(y: torch.Tensor) -> torch.Tensor:
            return y.view(b, t, -1, self.head_dim).transpose(1, 2)

        y = F.scaled_dot_product_attention(split(self.q(x)), split(self.k(x)), split(self.v(x)))
        return self.out(y.transpose(1, 2).reshape(b, t, -1))


class EncoderBlock(nn.Module):
    """Pre-norm transformer encoder block: attention and feed-forward, both residual."""

    def __init__(self, dim: int, heads: int, hidden: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = SelfAttention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.fc2(F.gelu(self.fc1(self.norm2(x))))


class TinyTransformer(nn.Module):
    """Token + position embeddings, two encoder blocks, mean pooling and a classifier."""

    def __init__(self, vocab: int = 100, dim: int = 64, heads: int = 4, hidden: int = 128) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.pos = nn.Parameter(torch.randn(1, 16, dim) * 0.02)
        self.blocks = nn.ModuleList([EncoderBlock(dim, heads, hidden) for _ in range(2)])
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, 5)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        x = self.embed(input_ids) + self.pos[:, : input_ids.shape[1]]
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x).mean(dim=1))


class TiedLM(nn.Module):
    """A language model whose output projection shares the embedding matrix."""

    def __init__(self, vocab: int = 128, dim: int = 48, hidden: int = 96) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.blocks = nn.Sequential(ResidualMLPBlock(dim, hidden), ResidualMLPBlock(dim, hidden))
        self.norm = nn.LayerNorm(dim)
        self.lm_head = nn.Linear(dim, vocab, bias=False)
        self.lm_head.weight = self.embed.weight

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.lm_head(self.norm(self.blocks(self.embed(input_ids))))


class Conv1dNet(nn.Module):
    """1D convolutions over a (batch, channels, length) signal with a residual block."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Sequential(nn.Conv1d(4, 16, 5, padding=2), nn.BatchNorm1d(16), nn.ReLU())
        self.conv2 = nn.Sequential(
            nn.Conv1d(16, 32, 3, stride=2, padding=1), nn.BatchNorm1d(32), nn.ReLU()
        )
        self.res = nn.Sequential(nn.Conv1d(32, 32, 3, padding=1), nn.BatchNorm1d(32))
        self.fc = nn.Linear(32, 6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv2(self.conv1(x))
        x = F.relu(x + self.res(x))
        return self.fc(x.mean(dim=2))


class TextCNN(nn.Module):
    """Embedding, parallel 1D convolutions of widths 3 and 5, max over time, concat, classifier."""

    def __init__(self, vocab: int = 200, dim: int = 32) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.conv3 = nn.Conv1d(dim, 24, 3, padding=1)
        self.conv5 = nn.Conv1d(dim, 24, 5, padding=2)
        self.fc = nn.Linear(48, 4)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        x = self.embed(input_ids).transpose(1, 2)
        a = F.relu(self.conv3(x)).amax(dim=2)
        b = F.relu(self.conv5(x)).amax(dim=2)
        return self.fc(torch.cat([a, b], dim=1))


class UNet(nn.Module):
    """Two-level encoder-decoder with skip concatenations and ConvTranspose2d upsampling."""

    def __init__(self) -> None:
        super().__init__()

        def double(cin: int, cout: int) -> nn.Sequential:
            return nn.Sequential(conv_bn(cin, cout), nn.ReLU(), conv_bn(cout, cout), nn.ReLU())

        self.enc1 = double(3, 16)
        self.enc2 = double(16, 32)
        self.bottom = double(32, 64)
        self.up2 = nn.ConvTranspose2d(64, 32, 2, stride=2)
        self.dec2 = double(64, 32)
        self.up1 = nn.ConvTranspose2d(32, 16, 2, stride=2)
        self.dec1 = double(32, 16)
        self.out = nn.Conv2d(16, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e1 = self.enc1(x)
        e2 = self.enc2(F.max_pool2d(e1, 2))
        b = self.bottom(F.max_pool2d(e2, 2))
        d2 = self.dec2(torch.cat([self.up2(b), e2], dim=1))
        d1 = self.dec1(torch.cat([self.up1(d2), e1], dim=1))
        return self.out(d1)


class TwoTower(nn.Module):
    """Two inputs (an image and a feature vector), fused by concat, two outputs (a tuple)."""

    def __init__(self) -> None:
        super().__init__()
        self.image = nn.Sequential(conv_bn(3, 16), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.vector = nn.Sequential(nn.Linear(8, 16), nn.ReLU())
        self.fuse = nn.Linear(32, 32)
        self.cls = nn.Linear(32, 5)
        self.reg = nn.Linear(32, 1)

    def forward(
        self, image: torch.Tensor, features: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        h = F.relu(self.fuse(torch.cat([self.image(image), self.vector(features)], dim=1)))
        return self.cls(h), self.reg(h)


class ExpertMLP(nn.Module):
    """One expert: Linear, GELU, Linear."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.up = nn.Linear(dim, hidden)
        self.down = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(F.gelu(self.up(x)))


class SparseMoE(nn.Module):
    """Top-2 mixture of experts kept in an ``nn.ModuleList``, dispatched by token index.

    The layout of hand-written MoE layers (and of transformers 4.x Mixtral): each expert runs
    on the tokens routed to it (``torch.where`` on the top-k indices, a data-dependent
    number of rows) and its output is added back at their positions with ``index_add``.
    """

    def __init__(self, dim: int = 32, hidden: int = 64, experts: int = 4, top_k: int = 2) -> None:
        super().__init__()
        self.top_k = top_k
        self.gate = nn.Linear(dim, experts, bias=False)
        self.experts = nn.ModuleList([ExpertMLP(dim, hidden) for _ in range(experts)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, x.shape[-1])
        weights, chosen = self.gate(flat).softmax(-1).topk(self.top_k, dim=-1)
        weights = weights / weights.sum(-1, keepdim=True)
        out = torch.zeros_like(flat)
        for e, expert in enumerate(self.experts):
            rows, slot = torch.where(chosen == e)
            out = out.index_add(0, rows, weights[rows, slot, None] * expert(flat[rows]))
        return out.reshape(x.shape)


class MoETransformer(nn.Module):
    """Token embedding, two pre-norm blocks (attention, then a sparse MoE), a classifier."""

    def __init__(self, vocab: int = 100, dim: int = 32, heads: int = 4, classes: int = 5) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.attn_norms = nn.ModuleList([nn.LayerNorm(dim) for _ in range(2)])
        self.attns = nn.ModuleList([SelfAttention(dim, heads) for _ in range(2)])
        self.moe_norms = nn.ModuleList([nn.LayerNorm(dim) for _ in range(2)])
        self.moes = nn.ModuleList([SparseMoE(dim) for _ in range(2)])
        self.head = nn.Linear(dim, classes)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        h = self.embed(ids)
        for attn_norm, attn, moe_norm, moe in zip(
            self.attn_norms, self.attns, self.moe_norms, self.moes, strict=True
        ):
            h = h + attn(attn_norm(h))
            h = h + moe(moe_norm(h))
        return self.head(h.mean(1))

"""SwiftUNet's own PyTorch implementation of the recipe's UNet, loss and RAdam, written from
REFERENCE.md (NVIDIA nnUNet / Composer layout and state_dict names). Used only to produce test
fixtures and benchmark comparisons; never a runtime dependency.
"""
import math
import torch
import torch.nn as nn
import torch.nn.functional as F


def conv_cls(dim):
    return nn.Conv2d if dim == 2 else nn.Conv3d


def norm_layer(kind, dim, channels):
    if kind == "batch":
        return (nn.BatchNorm2d if dim == 2 else nn.BatchNorm3d)(channels, eps=1e-5, momentum=0.1, affine=True)
    return (nn.InstanceNorm2d if dim == 2 else nn.InstanceNorm3d)(channels, eps=1e-5, affine=True)


def padding(k, s):
    return (k - s + 1) // 2


class ConvLayer(nn.Module):
    def __init__(self, dim, cin, cout, k, s, norm, slope):
        super().__init__()
        self.conv = conv_cls(dim)(cin, cout, k, s, padding(k, s), bias=False)
        self.norm = norm_layer(norm, dim, cout)
        self.lrelu = nn.LeakyReLU(slope)

    def forward(self, x):
        return self.lrelu(self.norm(self.conv(x)))


class ConvBlock(nn.Module):
    def __init__(self, dim, cin, cout, k, s, norm, slope):
        super().__init__()
        self.conv1 = ConvLayer(dim, cin, cout, k, s, norm, slope)
        self.conv2 = ConvLayer(dim, cout, cout, k, 1, norm, slope)

    def forward(self, x):
        return self.conv2(self.conv1(x))


class ResidBlock(nn.Module):
    def __init__(self, dim, cin, cout, k, s, norm, slope):
        super().__init__()
        self.conv1 = ConvLayer(dim, cin, cout, k, s, norm, slope)
        self.conv2 = conv_cls(dim)(cout, cout, k, 1, padding(k, 1), bias=False)
        self.norm = norm_layer(norm, dim, cout)
        self.lrelu = nn.LeakyReLU(slope)
        self.downsample = None
        if s > 1 or cin != cout:
            self.downsample = conv_cls(dim)(cin, cout, k, s, padding(k, s), bias=False)
            self.norm_res = norm_layer(norm, dim, cout)

    def forward(self, x):
        y = self.norm(self.conv2(self.conv1(x)))
        r = self.norm_res(self.downsample(x)) if self.downsample is not None else x
        return self.lrelu(y + r)


class UpsampleBlock(nn.Module):
    def __init__(self, dim, cin, cout, k, s, norm, slope):
        super().__init__()
        tconv = nn.ConvTranspose2d if dim == 2 else nn.ConvTranspose3d
        self.transp_conv = tconv(cin, cout, s, s, 0, bias=True)
        self.conv_block = ConvBlock(dim, 2 * cout, cout, k, 1, norm, slope)

    def forward(self, x, skip):
        return self.conv_block(torch.cat([self.transp_conv(x), skip], dim=1))


class OutputBlock(nn.Module):
    def __init__(self, dim, cin, cout):
        super().__init__()
        self.conv = conv_cls(dim)(cin, cout, 1, 1, 0, bias=True)
        nn.init.constant_(self.conv.bias, 0)

    def forward(self, x):
        return self.conv(x)


class UNet(nn.Module):
    """filters, kernels, strides: one entry per level (input block, downsamples..., bottleneck)."""

    def __init__(self, dim, in_channels, classes, filters, kernels, strides, residual, norm, slope=0.01, heads=0):
        super().__init__()
        block = ResidBlock if residual else ConvBlock
        depth = len(filters)
        self.input_block = block(dim, in_channels, filters[0], kernels[0], strides[0], norm, slope)
        self.downsamples = nn.ModuleList(
            [block(dim, filters[i - 1], filters[i], kernels[i], strides[i], norm, slope) for i in range(1, depth - 1)])
        self.bottleneck = block(dim, filters[-2], filters[-1], kernels[-1], strides[-1], norm, slope)
        self.upsamples = nn.ModuleList(
            [UpsampleBlock(dim, filters[l + 1], filters[l], kernels[l], strides[l + 1], norm, slope)
             for l in reversed(range(depth - 1))])
        self.output_block = OutputBlock(dim, filters[0], classes)
        self.deep_supervision_heads = nn.ModuleList([OutputBlock(dim, filters[i + 1], classes) for i in range(heads)])
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Conv3d)):
                nn.init.kaiming_normal_(m.weight, a=slope)
                if m.bias is not None:
                    nn.init.constant_(m.bias, 0)

    def forward(self, x):
        skips = []
        x = self.input_block(x)
        for d in self.downsamples:
            skips.append(x)
            x = d(x)
        skips.append(x)
        x = self.bottleneck(x)
        decoder = []
        for u, s in zip(self.upsamples, reversed(skips)):
            x = u(x, s)
            decoder.append(x)
        out = [self.output_block(x)]
        if self.training:
            for i, h in enumerate(self.deep_supervision_heads):
                out.append(h(decoder[-2 - i]))
        return out


def preset(name):
    if name == "composer-2d":
        return UNet(2, 4, 4, [32, 64, 128, 256, 512, 512], [3] * 6, [1, 2, 2, 2, 2, 2], True, "batch")
    if name == "nvidia-3d":
        return UNet(3, 4, 4, [32, 64, 128, 256, 320, 320], [3] * 6, [1, 2, 2, 2, 2, 2], False, "instance")
    raise ValueError(name)


@torch.no_grad()
def randomize_norms(model):
    """Non-trivial norm weights, biases and running statistics (fresh ones are 1, 0, 0, 1), so tests
    exercise their handling."""
    for _, p in model.named_parameters():
        if p.dim() == 1:
            p.add_(torch.randn_like(p) * 0.1)
    for n, b in model.named_buffers():
        if n.endswith("running_mean"):
            b.copy_(torch.randn_like(b) * 0.1)
        elif n.endswith("running_var"):
            b.copy_(1 + torch.rand_like(b))


def dice_ce_loss(logits, target):
    """Soft Dice (MONAI DiceLoss: softmax, one-hot, no background, batch sums, smoothing 1e-5) + CE."""
    classes = logits.shape[1]
    p = torch.softmax(logits, dim=1)
    onehot = F.one_hot(target[:, 0].long(), classes).movedim(-1, 1).to(logits.dtype)
    axes = [0] + list(range(2, logits.dim()))
    inter = (p * onehot).sum(axes)[1:]
    denominator = onehot.sum(axes)[1:] + p.sum(axes)[1:]
    dice = (1 - (2 * inter + 1e-5) / (denominator + 1e-5)).mean()
    return dice + F.cross_entropy(logits, target[:, 0].long())


class RAdam:
    """The recipe's RAdam (torch_optimizer variant): decoupled weight decay applied before the update,
    un-rectified momentum step while N_sma < 5. State per parameter in float32, scalars in float64."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-4):
        self.params = list(params)
        self.lr, self.betas, self.eps, self.wd = lr, betas, eps, weight_decay
        self.step_count = 0
        self.m = [torch.zeros_like(p) for p in self.params]
        self.v = [torch.zeros_like(p) for p in self.params]

    @torch.no_grad()
    def step(self):
        b1, b2 = self.betas
        self.step_count += 1
        t = self.step_count
        beta2_t = b2 ** t
        n_sma_max = 2 / (1 - b2) - 1
        n_sma = n_sma_max - 2 * t * beta2_t / (1 - beta2_t)
        if n_sma >= 5:
            step_size = self.lr * math.sqrt((1 - beta2_t) * (n_sma - 4) / (n_sma_max - 4) * (n_sma - 2) / n_sma
                                            * n_sma_max / (n_sma_max - 2)) / (1 - b1 ** t)
        else:
            step_size = self.lr / (1 - b1 ** t)
        for p, m, v in zip(self.params, self.m, self.v):
            g = p.grad
            v.mul_(b2).addcmul_(g, g, value=1 - b2)
            m.mul_(b1).add_(g, alpha=1 - b1)
            if self.wd != 0:
                p.add_(p, alpha=-self.wd * self.lr)
            if n_sma >= 5:
                p.addcdiv_(m, v.sqrt().add_(self.eps), value=-step_size)
            else:
                p.add_(m, alpha=-step_size)

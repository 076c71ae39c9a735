"""Conv -> (BatchNorm) -> ReLU, the block of ``ConvNet`` and ``VGG``, reporting both activations."""

from __future__ import annotations

from torch import Tensor, nn


class ConvBNReLU(nn.Module):
    """``post = relu(bn(conv(x)))`` (``bn`` only with ``batch_norm``); ``forward`` returns
    ``(pre, post)`` with ``pre = conv(x)``, the pre-activation before BatchNorm and ReLU.

    The convolution has a bias only without BatchNorm (BatchNorm's shift makes it redundant).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        kernel_size: int,
        stride: int,
        padding: int,
        batch_norm: bool,
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(
            in_channels, out_channels, kernel_size, stride=stride, padding=padding, bias=not batch_norm
        )
        self.norm = nn.BatchNorm2d(out_channels) if batch_norm else nn.Identity()
        self.activation = nn.ReLU()

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(pre, post)``, both ``(B, out_channels, H', W')``."""
        pre = self.conv(x)
        return pre, self.activation(self.norm(pre))

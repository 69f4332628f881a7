"""The multi-layer perceptron used by every backbone."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from optembed.layers.packed_linear import PackedLinear


class MLP(nn.Module):
    """``Linear -> BatchNorm1d (optional) -> ReLU -> Dropout`` per hidden layer.

    With ``out_dim`` set (default 1) a final ``Linear(hidden[-1], out_dim)`` follows;
    with ``out_dim=None`` the module stops after the last hidden block (used by DCN,
    whose deep tower is concatenated with the cross network before the output layer).
    ``kept_inputs``: the input columns that can be nonzero; the first linear layer then reads
    those alone (:class:`~optembed.layers.packed_linear.PackedLinear`), in that order from packed
    inputs (:meth:`forward_packed`).
    """

    def __init__(
        self,
        in_dim: int,
        hidden: Sequence[int],
        dropout: float = 0.0,
        batch_norm: bool = True,
        out_dim: int | None = 1,
        kept_inputs: Tensor | None = None,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = in_dim

        def linear(width: int, out: int) -> nn.Linear:
            if kept_inputs is not None and not layers:
                return PackedLinear(width, out, kept_inputs)
            return nn.Linear(width, out)

        for h in hidden:
            layers.append(linear(width, h))
            if batch_norm:
                layers.append(nn.BatchNorm1d(h))
            layers.append(nn.ReLU())
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = h
        if out_dim is not None:
            layers.append(linear(width, out_dim))
            width = out_dim
        self.layers = nn.Sequential(*layers)
        self.output_dim = width

    @property
    def first(self) -> nn.Linear | None:
        """The first linear layer (``None`` for an empty stack)."""
        return self.layers[0] if len(self.layers) else None  # type: ignore[return-value]

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x)

    def forward_packed(self, x: Tensor) -> Tensor:
        """The stack on packed inputs: the columns ``kept_inputs`` lists, in its order (all the
        inputs, in order, when the first layer is a plain one)."""
        first = self.first
        if first is None:
            return x
        pre = first.forward_packed(x) if isinstance(first, PackedLinear) else first(x)
        return self.after_first(pre)

    def after_first(self, pre: Tensor) -> Tensor:
        """The rest of the stack, given the first linear layer's output ``pre``."""
        return self.layers[1:](pre)

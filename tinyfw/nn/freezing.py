"""Freezing parameters by name, and gradual unfreezing (ULMFiT, Howard & Ruder 2018).

A frozen parameter has ``requires_grad=False``: backward gives it no gradient, and optimizers
take only ``trainable_parameters(model)`` (they refuse frozen ones and skip any parameter whose
gradient is None).

Name patterns are shell-style globs (``fnmatch``; ``*`` also crosses dots) over the names of
``model.named_parameters()``. A pattern also selects everything under a module of that name:
``"blocks.1"`` matches ``blocks.1.mlp.fc.weight``.
"""
import fnmatch


def name_patterns(where, patterns):
    """``patterns`` as a list of non-empty strings (one string is a list of one)."""
    if isinstance(patterns, str):
        patterns = [patterns]
    patterns = list(patterns)
    if not patterns or not all(isinstance(p, str) and p for p in patterns):
        raise ValueError(f"{where}: patterns must be non-empty strings, got {patterns!r}")
    return patterns


def matches(name, pattern):
    """Whether parameter ``name`` is selected by ``pattern`` (itself or a module above it)."""
    return fnmatch.fnmatchcase(name, pattern) or fnmatch.fnmatchcase(name, pattern + ".*")


def select_parameters(model, patterns, where="select_parameters"):
    """``(name, parameter)`` pairs matched by any of ``patterns``, in ``named_parameters()``
    order. A pattern that matches no parameter is an error (a typo would silently train or
    freeze nothing)."""
    patterns = name_patterns(where, patterns)
    named = list(model.named_parameters())
    for pattern in patterns:
        if not any(matches(name, pattern) for name, _ in named):
            raise ValueError(f"{where}: pattern {pattern!r} matches no parameter of "
                             f"{type(model).__name__} (names look like "
                             f"{[n for n, _ in named][:6]})")
    return [(name, p) for name, p in named if any(matches(name, pat) for pat in patterns)]


def freeze(model, patterns="*"):
    """Set ``requires_grad=False`` on the parameters matched by ``patterns``; returns their
    names."""
    chosen = select_parameters(model, patterns, "freeze")
    for _, p in chosen:
        p.requires_grad_(False)
        p.grad = None
    return [name for name, _ in chosen]


def unfreeze(model, patterns="*"):
    """Set ``requires_grad=True`` on the parameters matched by ``patterns``; returns their
    names."""
    chosen = select_parameters(model, patterns, "unfreeze")
    for _, p in chosen:
        p.requires_grad_(True)
    return [name for name, _ in chosen]


def trainable_parameters(model):
    """The parameters with ``requires_grad=True`` (what to hand to an optimizer)."""
    return [p for p in model.parameters() if p.requires_grad]


def count_parameters(model):
    """``{'trainable': n, 'frozen': n, 'total': n}`` in numbers (shared parameters once)."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return {"trainable": trainable, "frozen": total - trainable, "total": total}


class GradualUnfreezing:
    """ULMFiT's gradual unfreezing as a schedule: ``groups`` are name patterns (or lists of
    them) ordered from the top of the model (the output) down. At construction every parameter
    of every group is frozen and then the first group unfrozen; each ``every`` calls of
    ``step()`` unfreeze the next group, until all are trainable. Parameters in no group are left
    as they are.

    With ``optimizer`` given, each newly unfrozen group is added to it as a parameter group
    (``Optimizer.add_param_group``, the optimizer's default options), unless already there.

        schedule = GradualUnfreezing(model, ["classifier", "body.blocks.1", "body.blocks.0"],
                                     every=100, optimizer=opt)
        for step in range(steps):
            ...; opt.step(); schedule.step()
    """

    def __init__(self, model, groups, every, optimizer=None):
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ValueError(f"GradualUnfreezing: every must be an integer >= 1, got "
                             f"every={every!r}")
        groups = list(groups)
        if not groups:
            raise ValueError("GradualUnfreezing: groups is empty")
        self.model, self.every, self.optimizer = model, every, optimizer
        self.groups = [name_patterns(f"GradualUnfreezing: group {i}", g)
                       for i, g in enumerate(groups)]
        self._members = [select_parameters(model, g, f"GradualUnfreezing: group {i}")
                         for i, g in enumerate(self.groups)]
        for members in self._members:
            for _, p in members:
                p.requires_grad_(False)
                p.grad = None
        self.steps_taken = 0
        self.n_unfrozen = 0
        self._unfreeze_next()

    def group_unfrozen_at(self, index):
        """The ``step()`` count after which group ``index`` is trainable (0: from the start)."""
        return index * self.every

    def _unfreeze_next(self):
        members = self._members[self.n_unfrozen]
        for _, p in members:
            p.requires_grad_(True)
        if self.optimizer is not None:
            present = {id(p) for g in self.optimizer.param_groups for p in g["params"]}
            new = [p for _, p in members if id(p) not in present]
            if new:
                self.optimizer.add_param_group({"params": new})
        self.n_unfrozen += 1
        return [name for name, _ in members]

    def step(self):
        """Count one step; returns the parameter names unfrozen by it (usually none)."""
        self.steps_taken += 1
        if (self.n_unfrozen < len(self.groups)
                and self.steps_taken >= self.group_unfrozen_at(self.n_unfrozen)):
            return self._unfreeze_next()
        return []

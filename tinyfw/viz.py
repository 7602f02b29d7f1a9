"""Drawing the backward graph of a Tensor: Graphviz DOT text, and an SVG or PNG made from it.

    import tinyfw as fw
    x = fw.randn(3, requires_grad=True)
    y = (x * x).sum()
    print(fw.viz.to_dot(y))              # DOT text, no dependency: paste it into any DOT viewer
    fw.viz.draw(y, "graph.svg")          # runs Graphviz's ``dot`` program, when it is installed

The graph is the one ``backward`` walks (``autograd.py``): a Tensor made by a Function points at
that call's ``Context`` (``tensor._ctx``, None for a leaf), and the Context remembers the
Function (``ctx.function``) and its input Tensors (``ctx.inputs``, None where an argument was not
a Tensor). The drawing has

- a box for every Tensor: its name (when ``names`` gives one), shape, dtype (and device when not
  the CPU), and whether it is a leaf and requires grad. Leaves that require grad (the weights)
  are filled blue, leaves that do not (data, constants, anything computed under ``no_grad``) are
  grey and dashed, the tensors drawn from (the roots) have a thick border;
- an ellipse for every Function call, labelled with the Function's class name (and its number
  of outputs when it has several);
- arrows in the direction the forward pass ran: input -> op -> output. When an op has several
  Tensor inputs, each arrow says which argument it is (``Sub``: 0 - 1).

A Tensor used twice appears once, with two arrows leaving it: the drawing is a graph, not a tree,
just as the gradients of both uses are summed into one. The walk is iterative (no recursion
limit), and node names (``t0``, ``op0``, ...) are given in the order the walk meets them, so the
same graph always gives the same text.
"""
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np

from .fileio import atomic_write
from .tensor import Tensor

__all__ = ["to_dot", "draw", "GraphvizNotFoundError", "FORMATS", "RANKDIRS"]

#: the file suffixes ``draw`` renders, and Graphviz's name of each format
FORMATS = {".svg": "svg", ".png": "png"}
#: Graphviz's layout directions: TB = inputs at the top, output at the bottom
RANKDIRS = ("TB", "BT", "LR", "RL")
#: seconds ``draw`` waits for ``dot`` (a graph of a few thousand nodes takes well under one)
DOT_TIMEOUT_S = 120

INSTALL_HINT = (
    "install Graphviz to render drawings: `sudo apt-get install graphviz` (Debian, Ubuntu), "
    "`brew install graphviz` (macOS), `conda install -c conda-forge graphviz`, or see "
    "https://graphviz.org/download/. fw.viz.to_dot(tensor) needs nothing installed: it returns "
    "the DOT text, which any Graphviz viewer (including online ones) can render")


class GraphvizNotFoundError(RuntimeError):
    """Graphviz's ``dot`` program is not installed (or not on ``PATH``)."""


# ------------------------------------------------------------------------------- checks

def _roots(op, tensor):
    """The Tensors to draw from: ``tensor`` itself, or the Tensors of a list or tuple."""
    roots = list(tensor) if isinstance(tensor, (list, tuple)) else [tensor]
    if not roots:
        raise ValueError(f"{op}: got an empty {type(tensor).__name__}; pass a Tensor or a list "
                         "of Tensors")
    for r in roots:
        if not isinstance(r, Tensor):
            raise TypeError(f"{op}: expected a Tensor (or a list or tuple of Tensors), got "
                            f"{type(r).__name__}")
    return roots


def _names_by_id(op, names):
    """``{id(tensor): name}`` from a mapping ``name -> Tensor`` such as
    ``dict(model.named_parameters())``."""
    if names is None:
        return {}
    if not hasattr(names, "items"):
        raise TypeError(f"{op}: names must be a mapping from name to Tensor (for example "
                        f"dict(model.named_parameters())), got {type(names).__name__}")
    by_id = {}
    for name, t in names.items():
        if not isinstance(name, str) or not isinstance(t, Tensor):
            raise TypeError(f"{op}: names must map str -> Tensor, got {type(name).__name__} "
                            f"-> {type(t).__name__} for entry {name!r}")
        by_id.setdefault(id(t), name)
    return by_id


def _check_rankdir(op, rankdir):
    if rankdir not in RANKDIRS:
        raise ValueError(f"{op}: rankdir must be one of {RANKDIRS}, got {rankdir!r}")


# ------------------------------------------------------------------------------- DOT text

def _quote(text):
    """A DOT string literal; a newline in ``text`` becomes a line break of the label."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


def _shape_text(shape):
    return "(" + ", ".join(str(n) for n in shape) + ("," if len(shape) == 1 else "") + ")"


def _tensor_label(t, name):
    lines = [name] if name else []
    kind = np.dtype(t.dtype).name + ("" if t.device == "cpu" else f" on {t.device}")
    lines += [_shape_text(t.shape), kind]
    if t.is_leaf:
        lines.append("leaf, requires grad" if t.requires_grad else "leaf, no grad")
    else:
        lines.append("requires grad")
    return "\n".join(lines)


def _tensor_style(t, is_root):
    if t.is_leaf and t.requires_grad:
        style = 'shape=box, style="rounded,filled", fillcolor="#cfe2f3"'
    elif t.is_leaf:
        style = 'shape=box, style="rounded,dashed,filled", fillcolor="#eeeeee", color="#666666"'
    else:
        style = 'shape=box, style="rounded"'
    return style + (", penwidth=2.5" if is_root else "")


def _walk(roots):
    """Tensors and graph nodes reachable from ``roots``, each once, in the order first met.

    Returns ``(tensors, ops, edges)``: tensors and ops as lists of objects, edges as tuples
    ``(kind, a, b, label)`` with kind 'in' (tensor a is input ``label`` of op b) or 'out'
    (op a made tensor b, its output ``label``)."""
    tensors, ops, edges = [], [], []
    seen_tensors, seen_ops = set(), set()
    stack = list(reversed(roots))
    while stack:
        t = stack.pop()
        if id(t) in seen_tensors:
            continue
        seen_tensors.add(id(t))
        tensors.append(t)
        ctx = t._ctx
        if ctx is None:
            continue
        edges.append(("out", ctx, t, t._out_index))
        if id(ctx) in seen_ops:
            continue
        seen_ops.add(id(ctx))
        ops.append(ctx)
        for position, x in enumerate(ctx.inputs):
            if x is not None:
                edges.append(("in", x, ctx, position))
        stack.extend(x for x in reversed(ctx.inputs) if x is not None)
    return tensors, ops, edges


def to_dot(tensor, names=None, rankdir="TB", title=None):
    """The backward graph of ``tensor`` as Graphviz DOT text (a ``str``); no dependency.

    ``tensor``: a Tensor, or a list or tuple of Tensors (drawn together, shared parts once).
    ``names``: an optional mapping ``name -> Tensor`` (``dict(model.named_parameters())``, or
    ``{"x": x, "w": w}``) whose names label those tensors. ``rankdir``: Graphviz's layout
    direction, 'TB' (inputs at the top), 'BT', 'LR' or 'RL'. ``title``: a caption.

    A tensor computed under ``no_grad`` (or from tensors that do not require grad) has no
    graph: it is drawn as a single grey leaf.
    """
    op = "to_dot"
    roots = _roots(op, tensor)
    label_of = _names_by_id(op, names)
    _check_rankdir(op, rankdir)
    if title is not None and not isinstance(title, str):
        raise TypeError(f"{op}: title must be a str or None, got {type(title).__name__}")

    tensors, ops, edges = _walk(roots)
    node_id = {}
    for i, t in enumerate(tensors):
        node_id[id(t)] = f"t{i}"
    for i, ctx in enumerate(ops):
        node_id[id(ctx)] = f"op{i}"
    root_ids = {id(r) for r in roots}

    lines = ["digraph tinyfw {", f"  rankdir={rankdir};",
             '  node [fontname="Helvetica", fontsize=11];',
             '  edge [fontname="Helvetica", fontsize=9];']
    if title:
        lines.append(f"  label={_quote(title)}; labelloc=t;")
    for t in tensors:
        label = _tensor_label(t, label_of.get(id(t)))
        lines.append(f"  {node_id[id(t)]} [label={_quote(label)}, "
                     f"{_tensor_style(t, id(t) in root_ids)}];")
    for ctx in ops:
        n_out = len(ctx.output_meta)
        label = ctx.function.__name__ + (f"\n{n_out} outputs" if n_out > 1 else "")
        lines.append(f"  {node_id[id(ctx)]} [label={_quote(label)}, shape=ellipse, "
                     'style=filled, fillcolor="#fff2cc"];')
    for kind, a, b, position in edges:
        if kind == "in":
            n_inputs = sum(x is not None for x in b.inputs)
            label = f" [label={_quote(str(position))}]" if n_inputs > 1 else ""
        else:
            label = (f" [label={_quote('out ' + str(position))}]"
                     if len(a.output_meta) > 1 else "")
        lines.append(f"  {node_id[id(a)]} -> {node_id[id(b)]}{label};")
    lines.append("}")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------- rendering

def _dot_program():
    """The path of Graphviz's ``dot``, or GraphvizNotFoundError saying how to install it."""
    found = shutil.which("dot")
    if found is None:
        raise GraphvizNotFoundError(f"draw: Graphviz's `dot` program was not found on PATH; "
                                    f"{INSTALL_HINT}")
    return found


def draw(tensor, path, names=None, rankdir="TB", title=None):
    """Render the backward graph of ``tensor`` to ``path``: SVG or PNG, by its suffix.

    Runs Graphviz's ``dot`` program on :func:`to_dot`'s text (same arguments) and writes the
    result atomically (a failed render leaves an existing file untouched). Raises
    ``GraphvizNotFoundError`` with install instructions when ``dot`` is not installed.
    Returns the path written, as a ``pathlib.Path``.
    """
    op = "draw"
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"{op}: path must be a str or os.PathLike, got {type(path).__name__}")
    path = Path(path)
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise ValueError(f"{op}: cannot tell the format from the suffix {path.suffix!r} of "
                         f"{str(path)!r}; use one of {sorted(FORMATS)}")
    text = to_dot(tensor, names=names, rankdir=rankdir, title=title)
    program = _dot_program()
    try:
        result = subprocess.run([program, f"-T{fmt}"], input=text.encode("utf-8"),
                                capture_output=True, timeout=DOT_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"{op}: Graphviz's dot ({program}) did not finish within "
                           f"{DOT_TIMEOUT_S} s") from None
    if result.returncode != 0 or not result.stdout:
        message = result.stderr.decode("utf-8", "replace").strip() or "no output"
        raise RuntimeError(f"{op}: Graphviz's dot ({program}) failed with exit status "
                           f"{result.returncode}: {message}")
    atomic_write(path, lambda f: f.write(result.stdout))
    return path

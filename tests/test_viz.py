"""fw.viz: the DOT text of a backward graph (structure, labels, shared parts, leaves, no_grad),
bad input, and draw() with Graphviz present, absent, failing, and (when installed) for real."""
import os
import re
import shutil
import stat
import sys

import numpy as np
import pytest

import tinyfw as fw
from tinyfw import viz
from tinyfw.autograd import Function

NODE = re.compile(r'^\s+(t\d+|op\d+) \[label="((?:[^"\\]|\\.)*)"(.*)\];$')
EDGE = re.compile(r'^\s+(t\d+|op\d+) -> (t\d+|op\d+)(?: \[label="([^"]*)"\])?;$')


def parse(dot):
    """(nodes: id -> (label lines, attributes), edges: [(from, to, label or None)])."""
    nodes, edges = {}, []
    for line in dot.splitlines():
        m = NODE.match(line)
        if m:
            nodes[m.group(1)] = (m.group(2).split("\\n"), m.group(3))
            continue
        m = EDGE.match(line)
        if m:
            edges.append((m.group(1), m.group(2), m.group(3)))
    return nodes, edges


def tensors(nodes):
    return {k: v for k, v in nodes.items() if k.startswith("t")}


def ops(nodes):
    return {k: v for k, v in nodes.items() if k.startswith("op")}


def node_with(nodes, first_line):
    """The one node whose label starts with ``first_line``."""
    found = [k for k, (lines, _) in nodes.items() if lines[0] == first_line]
    assert len(found) == 1, (first_line, nodes)
    return found[0]


def leaf(*shape, requires_grad=True):
    return fw.tensor(np.random.default_rng(0).standard_normal(shape), dtype=fw.float64,
                     requires_grad=requires_grad)


# ------------------------------------------------------------------------------- structure

def test_fw_viz_is_the_module():
    assert fw.viz is viz
    assert callable(fw.viz.to_dot) and callable(fw.viz.draw)


def test_small_graph_counts_labels_and_edges():
    x, w = leaf(2, 3), leaf(2, 3)
    y = (x * w).sum()
    dot = viz.to_dot(y, names={"x": x, "w": w})
    assert dot.startswith("digraph") and dot.rstrip().endswith("}")
    nodes, edges = parse(dot)
    assert len(tensors(nodes)) == 4            # y, x * w, x, w
    assert sorted(lines[0] for lines, _ in ops(nodes).values()) == ["Mul", "Sum"]
    assert len(edges) == 5                     # Mul -> xw, xw -> Sum, Sum -> y, x -> Mul, w -> Mul

    ix, iw = node_with(nodes, "x"), node_with(nodes, "w")
    mul, total = node_with(nodes, "Mul"), node_with(nodes, "Sum")
    assert nodes[ix][0] == ["x", "(2, 3)", "float64", "leaf, requires grad"]
    assert (ix, mul, "0") in edges and (iw, mul, "1") in edges
    (xw,) = [b for a, b, _ in edges if a == mul]
    assert nodes[xw][0] == ["(2, 3)", "float64", "requires grad"]
    assert (xw, total, None) in edges          # one Tensor input: no argument label
    (root,) = [b for a, b, _ in edges if a == total]
    assert nodes[root][0] == ["()", "float64", "requires grad"]
    assert "penwidth" in nodes[root][1] and "penwidth" not in nodes[xw][1]


def test_function_names_and_argument_order():
    x, w = leaf(3), leaf(3)
    nodes, edges = parse(viz.to_dot((x - w).exp(), names={"x": x, "w": w}))
    assert sorted(lines[0] for lines, _ in ops(nodes).values()) == ["Exp", "Sub"]
    sub = node_with(nodes, "Sub")
    assert (node_with(nodes, "x"), sub, "0") in edges
    assert (node_with(nodes, "w"), sub, "1") in edges


def test_shared_subexpression_appears_once():
    x = leaf(4)
    a = x.exp()
    y = (a * a).sum() + a.sum()
    nodes, edges = parse(viz.to_dot(y, names={"a": a, "x": x}))
    assert [lines[0] for lines, _ in ops(nodes).values()].count("Exp") == 1
    assert len(tensors(nodes)) == 6            # y, (a*a).sum(), a.sum(), a*a, a, x
    ia = node_with(nodes, "a")
    out_of_a = [(b, label) for a_, b, label in edges if a_ == ia]
    assert len(out_of_a) == 3                  # into Mul as arguments 0 and 1, into one Sum
    mul = node_with(nodes, "Mul")
    assert (mul, "0") in out_of_a and (mul, "1") in out_of_a
    assert len([1 for a_, b, _ in edges if b == ia]) == 1     # made by Exp, once


def test_leaf_and_non_leaf_styles():
    w = leaf(3)
    c = leaf(3, requires_grad=False)
    y = w * c
    nodes, _ = parse(viz.to_dot(y, names={"w": w, "c": c, "y": y}))
    lw, lc, ly = (nodes[node_with(nodes, n)] for n in ("w", "c", "y"))
    assert lw[0][-1] == "leaf, requires grad" and "filled" in lw[1] and "dashed" not in lw[1]
    assert lc[0][-1] == "leaf, no grad" and "dashed" in lc[1]
    assert ly[0][-1] == "requires grad" and "filled" not in ly[1]


def test_no_grad_tensor_is_one_leaf():
    x = leaf(3)
    with fw.no_grad():
        z = x * 2
    nodes, edges = parse(viz.to_dot(z))
    assert len(nodes) == 1 and edges == []
    (lines, attrs), = nodes.values()
    assert lines == ["(3,)", "float64", "leaf, no grad"] and "dashed" in attrs

    # used later in a recorded graph, it is a leaf there too: no op above it
    y = (z * x).sum()
    nodes, edges = parse(viz.to_dot(y, names={"z": z, "x": x}))
    iz = node_with(nodes, "z")
    assert nodes[iz][0][-1] == "leaf, no grad"
    assert [e for e in edges if e[1] == iz] == []
    assert len(ops(nodes)) == 2                # Mul, Sum: the no_grad Mul is not drawn


def test_multi_output_function_and_unlabelled_non_tensor_arguments():
    class SplitHalves(Function):
        @staticmethod
        def forward(ctx, x, scale):
            n = x.shape[0] // 2
            return x[:n] * scale, x[n:] * scale

        @staticmethod
        def backward(ctx, g1, g2):
            return np.concatenate([g1, g2]), None

    x = leaf(4)
    lo, hi = SplitHalves.apply(x, 3.0)
    nodes, edges = parse(viz.to_dot([lo, hi], names={"lo": lo, "hi": hi, "x": x}))
    op = node_with(nodes, "SplitHalves")
    assert nodes[op][0] == ["SplitHalves", "2 outputs"]
    assert (op, node_with(nodes, "lo"), "out 0") in edges
    assert (op, node_with(nodes, "hi"), "out 1") in edges
    assert (node_with(nodes, "x"), op, None) in edges    # the float argument is not a node
    assert len(tensors(nodes)) == 3 and len(ops(nodes)) == 1


def test_roots_in_a_list_share_their_graph():
    x = leaf(3)
    a = x.tanh()
    nodes, _ = parse(viz.to_dot([a.sum(), (a * 2).sum()]))
    assert [lines[0] for lines, _ in ops(nodes).values()].count("Tanh") == 1
    assert sum("penwidth" in attrs for _, attrs in nodes.values()) == 2


def test_graph_after_backward_and_deterministic_text():
    x = leaf(3)
    y = (x.exp() * x).sum()
    before = viz.to_dot(y)
    y.backward()                               # frees the saved arrays, keeps the structure
    assert viz.to_dot(y) == before
    assert parse(before)[0] == parse(viz.to_dot(y))[0]


def test_deep_graph_needs_no_recursion():
    x = leaf(2)
    y = x
    n = sys.getrecursionlimit() + 500
    for _ in range(n):
        y = y + 1.0
    nodes, edges = parse(viz.to_dot(y))
    assert len(ops(nodes)) == n and len(tensors(nodes)) == n + 1 and len(edges) == 2 * n


def test_device_dtype_and_special_characters_in_names():
    x = fw.tensor([1.0, 2.0], requires_grad=True)             # float32, the default
    dot = viz.to_dot(x * 2, names={'the "x"\\': x}, title="a title")
    assert r'label="the \"x\"\\\n(2,)\nfloat32\nleaf, requires grad"' in dot
    assert 'label="a title"' in dot


def test_rankdir():
    x = leaf(2)
    assert "rankdir=LR;" in viz.to_dot(x.exp(), rankdir="LR")
    assert "rankdir=TB;" in viz.to_dot(x.exp())


# ------------------------------------------------------------------------------- bad input

@pytest.mark.parametrize("bad", [np.ones(3), [1.0, 2.0], None, 3.0])
def test_to_dot_refuses_non_tensors(bad):
    with pytest.raises(TypeError, match=r"to_dot: expected a Tensor.*got"):
        viz.to_dot(bad)


def test_to_dot_refuses_empty_list_bad_names_and_rankdir():
    x = leaf(2)
    with pytest.raises(ValueError, match="to_dot: got an empty list"):
        viz.to_dot([])
    with pytest.raises(TypeError, match="to_dot: names must be a mapping.*list"):
        viz.to_dot(x, names=[x])
    with pytest.raises(TypeError, match="to_dot: names must map str -> Tensor.*ndarray"):
        viz.to_dot(x, names={"x": x.numpy()})
    with pytest.raises(ValueError, match=r"to_dot: rankdir must be one of .*'UP'"):
        viz.to_dot(x, rankdir="UP")
    with pytest.raises(TypeError, match="to_dot: title must be a str"):
        viz.to_dot(x, title=3)


def test_draw_refuses_unknown_suffix_and_bad_path(tmp_path):
    x = leaf(2)
    with pytest.raises(ValueError, match=r"draw: cannot tell the format from the suffix '.jpg'"):
        viz.draw(x, tmp_path / "g.jpg")
    with pytest.raises(ValueError, match=r"suffix ''"):
        viz.draw(x, tmp_path / "graph")
    with pytest.raises(TypeError, match="draw: path must be a str or os.PathLike, got int"):
        viz.draw(x, 3)
    with pytest.raises(TypeError, match="to_dot: expected a Tensor"):
        viz.draw("not a tensor", tmp_path / "g.svg")
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------------- draw

def _check_install_message(message):
    assert "dot" in message and "not found" in message
    assert "apt-get install graphviz" in message and "brew install graphviz" in message
    assert "conda" in message and "to_dot" in message


def test_draw_without_graphviz_which_patched(tmp_path, monkeypatch):
    monkeypatch.setattr(viz.shutil, "which", lambda name, *a, **k: None)
    target = tmp_path / "g.svg"
    with pytest.raises(viz.GraphvizNotFoundError) as info:
        viz.draw(leaf(2).exp(), target)
    _check_install_message(str(info.value))
    assert isinstance(info.value, RuntimeError)
    assert not target.exists()


def test_draw_without_graphviz_on_path(tmp_path, monkeypatch):
    empty = tmp_path / "empty_bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    with pytest.raises(viz.GraphvizNotFoundError) as info:
        viz.draw(leaf(2).exp(), tmp_path / "g.png")
    _check_install_message(str(info.value))
    assert not (tmp_path / "g.png").exists()


def _fake_dot(directory, body):
    """An executable ``dot`` in ``directory`` running the shell script ``body``."""
    directory.mkdir(exist_ok=True)
    path = directory / "dot"
    path.write_text("#!/bin/sh\n" + body + "\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


@pytest.mark.skipif(os.name != "posix" or shutil.which("sh") is None,
                    reason="the stand-in dot program is a POSIX shell script")
@pytest.mark.parametrize("suffix, flag", [(".svg", "-Tsvg"), (".PNG", "-Tpng")])
def test_draw_runs_dot_with_the_format_and_writes_its_output(tmp_path, monkeypatch, suffix,
                                                             flag):
    bin_dir = tmp_path / "bin"
    _fake_dot(bin_dir, 'echo "$1"; cat')      # prints its flag, then the DOT text it was given
    monkeypatch.setenv("PATH", str(bin_dir) + os.pathsep + os.environ.get("PATH", ""))
    x = leaf(2)
    target = tmp_path / "out" / f"graph{suffix}"
    written = viz.draw(x.exp(), str(target), names={"x": x})
    assert written == target
    text = target.read_text()
    assert text.splitlines()[0] == flag
    assert text.split("\n", 1)[1] == viz.to_dot(x.exp(), names={"x": x})
    assert [p.name for p in target.parent.iterdir()] == [target.name]   # no temporary left


@pytest.mark.skipif(os.name != "posix" or shutil.which("sh") is None,
                    reason="the stand-in dot program is a POSIX shell script")
def test_draw_failure_keeps_the_old_file(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    _fake_dot(bin_dir, "cat > /dev/null; echo 'syntax error in line 3' >&2; exit 3")
    monkeypatch.setenv("PATH", str(bin_dir) + os.pathsep + os.environ.get("PATH", ""))
    target = tmp_path / "graph.svg"
    target.write_text("previous drawing")
    with pytest.raises(RuntimeError, match=r"draw: Graphviz's dot .* exit status 3: syntax error"):
        viz.draw(leaf(2).exp(), target)
    assert target.read_text() == "previous drawing"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bin", "graph.svg"]


@pytest.mark.skipif(shutil.which("dot") is None,
                    reason="Graphviz's dot is not installed (apt-get install graphviz)")
def test_draw_renders_svg_and_png_for_real(tmp_path):
    x, w = leaf(2, 3), leaf(3)
    y = (x @ w).tanh().sum()
    svg = viz.draw(y, tmp_path / "graph.svg", names={"x": x, "w": w})
    text = svg.read_text()
    assert "<svg" in text and "MatMul" in text and "Tanh" in text
    png = viz.draw(y, tmp_path / "graph.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

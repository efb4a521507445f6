"""GELU, LayerNorm and Softmax rules on the forms exporters write, and near misses."""

from __future__ import annotations

import math

import numpy as np
import onnx_graphsurgeon as gs
import pytest
from conftest import float_input, make_model
from onnx import helper

from bct_onnx.passes.match_gelu import GeluMatch, match_gelu
from bct_onnx.passes.match_layer_norm import LayerNormMatch, match_layer_norm
from bct_onnx.passes.match_softmax import SoftmaxMatch, match_softmax
from bct_onnx.passes.matching import NoMatch

SHAPE = [2, 5, 8]


def graph_of(nodes, initializers, *, opset=21, outputs=("y",)) -> gs.Graph:
    model = make_model(nodes, [float_input("x", SHAPE)], [float_input(name, SHAPE) for name in outputs],
                       {name: np.asarray(value, np.float32) for name, value in initializers.items()}, opset=opset)
    return gs.import_onnx(model)


def first_match(graph: gs.Graph, matcher):
    for node in graph.nodes:
        match = matcher(node)
        if not isinstance(match, NoMatch):
            return match
    return None


def erf_nodes(scaling: str, order: str) -> tuple[list, dict]:
    scale_node = (helper.make_node("Div", ["x", "sqrt2"], ["scaled"]) if scaling == "div"
                  else helper.make_node("Mul", ["x", "inv_sqrt2"], ["scaled"]))
    nodes = [scale_node, helper.make_node("Erf", ["scaled"], ["erf"]), helper.make_node("Add", ["erf", "one"], ["t"])]
    if order == "x_first":  # (x * (1 + erf)) * 0.5
        nodes += [helper.make_node("Mul", ["x", "t"], ["xt"]), helper.make_node("Mul", ["xt", "half"], ["y"])]
    elif order == "half_first":  # (x * 0.5) * (1 + erf)
        nodes += [helper.make_node("Mul", ["x", "half"], ["xh"]), helper.make_node("Mul", ["xh", "t"], ["y"])]
    else:  # x * ((1 + erf) * 0.5)
        nodes += [helper.make_node("Mul", ["t", "half"], ["th"]), helper.make_node("Mul", ["x", "th"], ["y"])]
    constants = {"sqrt2": math.sqrt(2), "inv_sqrt2": 1 / math.sqrt(2), "one": 1.0, "half": 0.5}
    return nodes, constants


@pytest.mark.parametrize("scaling", ["div", "mul"])
@pytest.mark.parametrize("order", ["x_first", "half_first", "half_last"])
def test_gelu_erf_forms_match(scaling, order):
    nodes, constants = erf_nodes(scaling, order)
    graph = graph_of(nodes, {key: value for key, value in constants.items()
                             if any(key in node.input for node in nodes)}, opset=17)
    match = first_match(graph, match_gelu)
    assert isinstance(match, GeluMatch)
    assert match.input.name == "x"
    assert match.output.name == "y"
    assert match.approximation == "none"
    assert len(match.nodes) == 5


def test_gelu_erf_with_wrong_constant_does_not_match():
    nodes, constants = erf_nodes("div", "x_first")
    constants["sqrt2"] = 2.0
    graph = graph_of(nodes, {key: constants[key] for key in ("sqrt2", "one", "half")}, opset=17)
    assert first_match(graph, match_gelu) is None
    erf = next(node for node in graph.nodes if node.op == "Erf")
    assert match_gelu(erf).reason == "Erf input is not x / sqrt(2) or x * (1 / sqrt(2))"


def test_gelu_tanh_form_matches():
    nodes = [
        helper.make_node("Pow", ["x", "three"], ["cube"]),
        helper.make_node("Mul", ["cube", "c"], ["cubic"]),
        helper.make_node("Add", ["x", "cubic"], ["inner"]),
        helper.make_node("Mul", ["inner", "k"], ["scaled"]),
        helper.make_node("Tanh", ["scaled"], ["tanh"]),
        helper.make_node("Add", ["tanh", "one"], ["t"]),
        helper.make_node("Mul", ["x", "t"], ["xt"]),
        helper.make_node("Mul", ["xt", "half"], ["y"]),
    ]
    constants = {"three": 3.0, "c": 0.044715, "k": math.sqrt(2 / math.pi), "one": 1.0, "half": 0.5}
    match = first_match(graph_of(nodes, constants), match_gelu)
    assert isinstance(match, GeluMatch)
    assert match.approximation == "tanh"
    assert match.input.name == "x"
    assert len(match.nodes) == 8


@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_gelu_op_matches(approximate):
    graph = graph_of([helper.make_node("Gelu", ["x"], ["y"], approximate=approximate)], {})
    match = first_match(graph, match_gelu)
    assert match.approximation == approximate
    assert match.bias is None


@pytest.mark.parametrize(("op", "approximation"), [("Gelu", "none"), ("FastGelu", "tanh"), ("BiasGelu", "none")])
def test_gelu_microsoft_ops_match(op, approximation):
    inputs = ["x", "bias"] if op == "BiasGelu" else ["x"]
    node = gs.Node(op, name="g", domain="com.microsoft",
                   inputs=[gs.Variable("x", np.float32, SHAPE)] + ([gs.Constant("bias", np.ones(8, np.float32))]
                                                                    if op == "BiasGelu" else []),
                   outputs=[gs.Variable("y", np.float32, SHAPE)])
    match = match_gelu(node)
    assert isinstance(match, GeluMatch)
    assert match.approximation == approximation
    assert (match.bias is not None) == (len(inputs) == 2)


def test_plain_erf_is_not_gelu():
    graph = graph_of([helper.make_node("Erf", ["x"], ["y"])], {})
    assert first_match(graph, match_gelu) is None


def test_layer_norm_op_matches():
    nodes = [helper.make_node("LayerNormalization", ["x", "gamma", "beta"], ["y"], epsilon=1e-12)]
    graph = graph_of(nodes, {"gamma": np.full(8, 2.0), "beta": np.full(8, 0.5)})
    match = first_match(graph, match_layer_norm)
    assert isinstance(match, LayerNormMatch)
    assert match.epsilon == pytest.approx(1e-12)
    np.testing.assert_array_equal(match.gamma, np.full(8, 2.0, np.float32))
    np.testing.assert_array_equal(match.beta, np.full(8, 0.5, np.float32))


def decomposed_layer_norm(square: str, *, axes_as_input: bool) -> tuple[list, dict]:
    def reduce_mean(source, target):
        if axes_as_input:
            return helper.make_node("ReduceMean", [source, "axes"], [target], keepdims=1)
        return helper.make_node("ReduceMean", [source], [target], axes=[-1], keepdims=1)

    nodes = [
        reduce_mean("x", "mean"),
        helper.make_node("Sub", ["x", "mean"], ["d"]),
        helper.make_node("Pow", ["d", "two"], ["sq"]) if square == "pow" else helper.make_node("Mul", ["d", "d"], ["sq"]),
        reduce_mean("sq", "var"),
        helper.make_node("Add", ["var", "eps"], ["var_eps"]),
        helper.make_node("Sqrt", ["var_eps"], ["std"]),
        helper.make_node("Div", ["d", "std"], ["n"]),
        helper.make_node("Mul", ["n", "gamma"], ["scaled"]),
        helper.make_node("Add", ["scaled", "beta"], ["y"]),
    ]
    constants = {"two": 2.0, "eps": 1e-5, "gamma": np.arange(8), "beta": np.ones(8)}
    return nodes, constants


@pytest.mark.parametrize("square", ["pow", "mul"])
@pytest.mark.parametrize("axes_as_input", [False, True])
def test_layer_norm_decomposed_matches(square, axes_as_input):
    nodes, constants = decomposed_layer_norm(square, axes_as_input=axes_as_input)
    opset = 18 if axes_as_input else 14
    if axes_as_input:
        model = make_model(nodes, [float_input("x", SHAPE)], [float_input("y", SHAPE)],
                           {**{k: np.asarray(v, np.float32) for k, v in constants.items()},
                            "axes": np.array([-1], np.int64)}, opset=opset)
        graph = gs.import_onnx(model)
    else:
        graph = graph_of(nodes, constants, opset=opset)
    match = first_match(graph, match_layer_norm)
    assert isinstance(match, LayerNormMatch)
    assert match.input.name == "x"
    assert match.output.name == "y"
    assert match.epsilon == pytest.approx(1e-5)
    np.testing.assert_array_equal(match.gamma, np.arange(8, dtype=np.float32))
    assert len(match.nodes) == 9


def test_layer_norm_over_two_axes_does_not_match():
    nodes = [helper.make_node("LayerNormalization", ["x", "gamma"], ["y"], axis=1)]
    graph = graph_of(nodes, {"gamma": np.ones((5, 8))})
    node = graph.nodes[0]
    assert match_layer_norm(node).reason == "normalizes from axis 1, not only the last axis"


def test_softmax_plain_and_guarded_match():
    plain = graph_of([helper.make_node("Softmax", ["x"], ["y"], axis=-1)], {})
    assert isinstance(first_match(plain, match_softmax), SoftmaxMatch)

    nodes = [
        helper.make_node("Softmax", ["x"], ["p"], axis=-1),
        helper.make_node("IsNaN", ["p"], ["nan"]),
        helper.make_node("Where", ["nan", "zero", "p"], ["y"]),
    ]
    guarded = first_match(graph_of(nodes, {"zero": 0.0}), match_softmax)
    assert guarded.output.name == "y"
    assert [node.op for node in guarded.nodes] == ["Softmax", "IsNaN", "Where"]


def test_softmax_over_middle_axis_does_not_match():
    graph = graph_of([helper.make_node("Softmax", ["x"], ["y"], axis=1)], {})
    assert match_softmax(graph.nodes[0]).reason == "Softmax over axis 1, not the last axis"

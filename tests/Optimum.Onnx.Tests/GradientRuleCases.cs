using Optimum.Onnx;
using Optimum.Tests;
using static Optimum.Onnx.Tests.In;

namespace Optimum.Onnx.Tests;

/// <summary>
/// The finite-difference cases, at least one per rule in <see cref="GradientRules.Table"/> (a test
/// fails when a rule has none). Adding a rule means adding a line here, not a test.
/// Cases run in double precision where ONNX Runtime's CPU kernel has a double version, else in float.
/// </summary>
internal static class GradientRuleCases
{
    private const DType F = DType.Float;

    public static readonly GradCase[] All =
    [
        new("Abs", "Abs", [Away(3, 4)], (g, x) => [g.Abs(x[0])]),
        new("Add", "Add (broadcast)", [P(2, 3, 4), P(3, 1)], (g, x) => [x[0] + x[1]]),
        new("BatchNormalization", "BatchNormalization (training)", [P(4, 3, 5), P(3), P(3), Const(P(3)), Const(Pos(3))],
            (g, x) => [g.BatchNormalization(x[0], x[1], x[2], x[3], x[4], training: true)[0]]),
        new("BatchNormalization", "BatchNormalization (inference)", [P(4, 3, 2, 2), P(3), P(3), Const(P(3)), Const(Pos(3))],
            (g, x) => [g.BatchNormalization(x[0], x[1], x[2], x[3], x[4], training: false)[0]]),
        new("BatchNormalization", "BatchNormalization (inference, running stats as parameters)", [P(3, 2, 4), P(2), P(2), P(2), Pos(2)],
            (g, x) => [g.BatchNormalization(x[0], x[1], x[2], x[3], x[4], training: false)[0]]),
        new("BatchNormalization", "BatchNormalization (training, running stats as parameters)", [P(3, 2, 4), P(2), P(2), P(2), Pos(2)],
            (g, x) => [g.BatchNormalization(x[0], x[1], x[2], x[3], x[4], training: true)[0]]),
        new("Cast", "Cast (float to double)", [P(2, 3)], (g, x) => [g.Cast(x[0], DType.Double) * g.Cast(x[0], DType.Double) * 1.5], F),
        new("Concat", "Concat", [P(2, 3), P(2, 2)], (g, x) => [g.Concat(1, x[0], x[1])]),
        new("Concat", "Concat (symbolic sizes)", [P(2, 3).As(2, "p"), P(2, 2).As(2, "q")], (g, x) => [g.Concat(-1, x[0], x[1])]),
        new("Conv", "Conv1d (groups, stride, pads)", [P(2, 4, 7), P(6, 2, 3), P(6)],
            (g, x) => [g.Conv(x[0], x[1], x[2], strides: [2], pads: [1, 1], group: 2)], F),
        new("Conv", "Conv2d (dilation, pads)", [P(1, 2, 5, 5), P(3, 2, 2, 2)],
            (g, x) => [g.Conv(x[0], x[1], null, pads: [1, 0, 1, 1], dilations: [2, 1])], F),
        new("Conv", "Conv2d 3x3 by patches (pads 1, bias, symbolic batch)", [P(2, 3, 6, 5).As("n", 3, 6, 5), P(4, 3, 3, 3), P(4)],
            (g, x) => [g.Conv(x[0], x[1], x[2], pads: [1, 1, 1, 1])], F),
        new("Conv", "Conv2d 3x3 by patches (stride 2, pads only at the end)", [P(2, 2, 7, 6), P(3, 2, 3, 3), P(3)],
            (g, x) => [g.Conv(x[0], x[1], x[2], strides: [2, 2], pads: [0, 0, 1, 1])], F),
        new("Conv", "Conv2d 1x1 and 2x3 by patches", [P(2, 3, 4, 5), P(2, 3, 1, 1), P(3, 2, 2, 3)],
            (g, x) => [g.Conv(g.Conv(x[0], x[1]), x[2], strides: [1, 2], pads: [1, 0, 0, 1])], F),
        new("Conv", "Conv1d twice (symbolic batch and length)", [P(2, 2, 6).As("n", 2, "len"), P(3, 2, 3), P(2, 3, 2)],
            (g, x) => [g.Conv(g.Relu(g.Conv(x[0], x[1], pads: [1, 1])), x[2], pads: [0, 1])], F),
        new("Cos", "Cos", [P(3, 4)], (g, x) => [g.Cos(x[0] * 2.0)]),
        new("CumSum", "CumSum", [P(2, 5)], (g, x) => [g.CumSum(x[0], 1) * x[0]]),
        new("CumSum", "CumSum (exclusive, reverse)", [P(3, 4)], (g, x) => [g.CumSum(x[0], 0, exclusive: true, reverse: true)]),
        new("Div", "Div (broadcast)", [P(2, 3), Pos(3)], (g, x) => [x[0] / x[1]]),
        new("Dropout", "Dropout (training, via mask)", [P(4, 5)], (g, x) => [g.Dropout(x[0], 0.5, training: true, seed: 7)], FreshSessions: true),
        new("Elu", "Elu", [Away(3, 4)], (g, x) => [g.Elu(x[0], 0.7f)]),
        new("Erf", "Erf", [P(3, 4)], (g, x) => [g.Erf(x[0])], F),
        new("Exp", "Exp", [P(3, 4)], (g, x) => [g.Exp(x[0])]),
        new("Expand", "Expand", [P(3, 1)], (g, x) => [g.Expand(x[0], 2, 3, 4)]),
        new("Flatten", "Flatten", [P(2, 3, 4)], (g, x) => [g.Flatten(x[0], 2) * g.Flatten(x[0], 2)]),
        new("Gather", "Gather (embedding, repeated ids)", [P(5, 3), Ints([0, 2, 4, 2], 2, 2)], (g, x) => [g.Gather(x[0], x[1], 0)]),
        new("Gather", "Gather (axis 1, negative ids)", [P(2, 4, 3), Ints([3, -1, 0], 3)], (g, x) => [g.Gather(x[0], x[1], 1)]),
        new("GatherElements", "GatherElements (repeated indices)", [P(3, 4), Ints([0, 2, 2, 1, 1, 0, 2, 2], 2, 4)], (g, x) => [g.GatherElements(x[0], x[1], 0)]),
        new("Gemm", "Gemm (transB, bias)", [P(3, 4), P(5, 4), P(5)], (g, x) => [g.Gemm(x[0], x[1], x[2], 0.5f, 2f, transB: true)]),
        new("Gemm", "Gemm (transA)", [P(4, 3), P(4, 5)], (g, x) => [g.Gemm(x[0], x[1], null, 1.5f, 1f, transA: true)]),
        new("Identity", "Identity", [P(3)], (g, x) => [g.Identity(x[0]) * x[0]]),
        new("LayerNormalization", "LayerNormalization (last axis)", [P(2, 3, 4), P(4), P(4)], (g, x) => [g.LayerNormalization(x[0], x[1], x[2])]),
        new("LayerNormalization", "LayerNormalization (axis 1, no bias)", [P(2, 3, 4), P(3, 4)], (g, x) => [g.LayerNormalization(x[0], x[1], null, axis: 1)]),
        new("Log", "Log", [Pos(3, 4)], (g, x) => [g.Log(x[0])]),
        new("LogSoftmax", "LogSoftmax", [P(2, 5)], (g, x) => [g.LogSoftmax(x[0])]),
        new("MatMul", "MatMul (batched broadcast)", [P(2, 1, 3, 4), P(3, 4, 2)], (g, x) => [g.MatMul(x[0], x[1])]),
        new("MatMul", "MatMul (shared 2-D weight)", [P(2, 3, 4), P(4, 5)], (g, x) => [g.MatMul(x[0], x[1])]),
        new("MatMul", "MatMul (1-D operands)", [P(4), P(2, 4, 3), P(3)], (g, x) => [g.MatMul(g.MatMul(x[0], x[1]), x[2])]),
        new("Max", "Max (broadcast)", [P(2, 3), P(3)], (g, x) => [g.Max(x[0], x[1])]),
        new("MaxPool", "MaxPool2d (stride 2)", [P(1, 2, 4, 5)], (g, x) => [g.MaxPool(x[0], [2, 2], strides: [2, 2])]),
        new("MaxPool", "MaxPool1d (pads, overlapping)", [P(2, 3, 8)], (g, x) => [g.MaxPool(x[0], [3], strides: [2], pads: [1, 1])]),
        new("Min", "Min (broadcast)", [P(2, 3), P(2, 1)], (g, x) => [g.Min(x[0], x[1])]),
        new("Mul", "Mul (broadcast, fan-out)", [P(2, 3, 4), P(4)], (g, x) => [x[0] * x[1] * x[0]]),
        new("Neg", "Neg", [P(3)], (g, x) => [-x[0]]),
        new("Pad", "Pad (constant)", [P(2, 3)], (g, x) => [g.Pad(x[0], [0, 1, 1, 2])]),
        new("Pow", "Pow (constant exponent)", [Pos(2, 3)], (g, x) => [g.Pow(x[0], 3)]),
        new("Pow", "Pow (tensor exponent)", [Pos(2, 3), P(3)], (g, x) => [g.Pow(x[0], x[1])]),
        new("Pow", "Pow (zero base, tensor exponent)", [Const(new In([2, 3], Values: [0, 0.5, 1.2, 0, 2, 0.7])), Pos(2, 3)], (g, x) => [g.Pow(x[0], x[1])]),
        new("Reciprocal", "Reciprocal", [Pos(3, 4)], (g, x) => [g.Reciprocal(x[0])]),
        new("ReduceMax", "ReduceMax (axis 1)", [P(2, 4, 3)], (g, x) => [g.ReduceMax(x[0], [1], keepDims: false)]),
        new("ReduceMean", "ReduceMean (axes 0, 2)", [P(2, 3, 4)], (g, x) => [g.ReduceMean(x[0], [0, 2])]),
        new("ReduceMean", "ReduceMean (symbolic batch)", [P(3, 4).As("batch", 4)], (g, x) => [g.ReduceMean(x[0], [0], keepDims: false)]),
        new("ReduceSum", "ReduceSum (all axes)", [P(2, 3)], (g, x) => [g.ReduceSum(x[0], [], keepDims: false) * g.ReduceSum(x[0], [1])]),
        new("Relu", "Relu", [Away(3, 4)], (g, x) => [g.Relu(x[0])]),
        new("Reshape", "Reshape (-1 and 0)", [P(2, 6)], (g, x) => [g.Reshape(x[0], 0, 3, -1) * g.Reshape(x[0], 2, 3, 2)]),
        new("ScatterElements", "ScatterElements (unique indices)", [P(3, 4), P(2, 4), Ints([0, 2, 1, 0, 2, 0, 0, 1], 2, 4)],
            (g, x) => [g.ScatterElements(x[0], x[2], x[1], axis: 0) * x[0]]),
        new("Sigmoid", "Sigmoid", [P(3, 4)], (g, x) => [g.Sigmoid(x[0])]),
        new("Slice", "Slice (unit steps)", [P(4, 5)], (g, x) => [g.Slice(x[0], [1, -4], [3, long.MaxValue], [0, 1])]),
        new("Slice", "Slice (negative and strided steps)", [P(4, 5)], (g, x) => [g.Slice(x[0], [-1, 0], [0, 5], [0, 1], [-2, 2])]),
        new("Slice", "Slice (symbolic dim)", [P(5, 3).As("n", 3)], (g, x) => [g.Slice(x[0], [1], [-1], [0])]),
        new("Softmax", "Softmax (axis 1)", [P(2, 3, 4)], (g, x) => [g.Softmax(x[0], 1)]),
        new("SoftmaxCrossEntropyLoss", "SoftmaxCrossEntropyLoss (mean, ignore_index)", [P(4, 5), Ints([1, -100, 4, 2], 4)],
            (g, x) => [g.SoftmaxCrossEntropyLoss(x[0], x[1], ignoreIndex: -100)]),
        new("SoftmaxCrossEntropyLoss", "SoftmaxCrossEntropyLoss (N,C,d, weights, sum)", [P(2, 3, 4), Ints([0, 1, 2, 1, 2, 2, 0, 1], 2, 4), Const(Pos(3))],
            (g, x) => [g.SoftmaxCrossEntropyLoss(x[0], x[1], x[2], reduction: "sum")]),
        new("SoftmaxCrossEntropyLoss", "SoftmaxCrossEntropyLoss (none, with log_prob)", [P(3, 4), Ints([3, 0, 1], 3)],
            (g, x) => { var l = g.SoftmaxCrossEntropyLoss(x[0], x[1], reduction: "none"); return [l, l.Producer!.Outputs[1]]; }),
        new("SoftmaxCrossEntropyLoss", "SoftmaxCrossEntropyLoss (mean, weights, ignore_index)", [P(5, 3), Ints([0, 2, -1, 1, 2], 5), Const(Pos(3))],
            (g, x) => [g.SoftmaxCrossEntropyLoss(x[0], x[1], x[2], ignoreIndex: -1)]),
        new("Resize", "Resize (nearest, 2x2 upsampling)", [P(1, 2, 3, 3)], (g, x) => [g.ResizeNearest(x[0], [1, 1, 2, 2]) * g.ResizeNearest(x[0], [1, 1, 2, 2])], F),
        new("Resize", "Resize (nearest, 2x3, symbolic batch)", [P(2, 2, 3, 4).As("n", 2, 3, 4), P(1, 2, 6, 12)], (g, x) => [g.ResizeNearest(x[0], [1, 1, 2, 3]) * x[1]], F),
        new("Sin", "Sin", [P(3, 4)], (g, x) => [g.Sin(x[0] * 2.0)]),
        new("Softplus", "Softplus", [P(3, 4)], (g, x) => [g.Softplus(x[0])]),
        new("Split", "Split (unused output)", [P(2, 6)], (g, x) => { var s = g.Split(x[0], 1, 1, 2, 3); return [s[0], s[2] * s[2]]; }),
        new("Split", "Split (runtime sizes of symbolic dims)", [P(2, 3).As(2, "p"), P(2, 2).As(2, "q")], (g, x) =>
        {
            Value Len(Value v) => g.Slice(g.ShapeOf(v), g.Ints(1), g.Ints(2), g.Ints(0));
            var s = g.Split(g.Concat(1, x[0], x[1]) * 2.0, 1, g.Concat(0, Len(x[0]), Len(x[1])));
            return [s[0] * s[0], s[1]];
        }),
        new("Sqrt", "Sqrt", [Pos(3, 4)], (g, x) => [g.Sqrt(x[0])]),
        new("Squeeze", "Squeeze", [P(2, 1, 3)], (g, x) => [g.Squeeze(x[0], 1) * g.Squeeze(x[0])]),
        new("Sub", "Sub (broadcast)", [P(2, 3), P(2, 1)], (g, x) => [x[0] - x[1]]),
        new("Sum", "Sum (three, broadcast)", [P(2, 3), P(3), P(1, 3)], (g, x) => [g.Sum(x[0], x[1], x[2]) * x[0]]),
        new("Tanh", "Tanh", [P(3, 4)], (g, x) => [g.Tanh(x[0])]),
        new("TopK", "TopK (values)", [P(3, 5)], (g, x) => [g.TopK(x[0], g.Ints(2), axis: 1)[0]]),
        new("Transpose", "Transpose", [P(2, 3, 4)], (g, x) => [g.Transpose(x[0], 2, 0, 1)]),
        new("Transpose", "Transpose of a weight in x @ Wᵀ (one Gemm)", [P(2, 3, 4), P(5, 4)], (g, x) => [g.MatMul(x[0], g.Transpose(x[1]))]),
        new("Unsqueeze", "Unsqueeze", [P(2, 3)], (g, x) => [g.Unsqueeze(x[0], 0, 2)]),
        new("Where", "Where (broadcast)", [Bools([true, false, false, true, true, false], 2, 3), P(2, 3), P(3)], (g, x) => [g.Where(x[0], x[1], x[2])]),
    ];
}

using Optimum.Onnx;
using Optimum.Tests;
using Xunit;
using Xunit.Abstractions;
using static Optimum.Onnx.Tests.In;

namespace Optimum.Onnx.Tests;

/// <summary>Whole graphs: broadcasting, fan-out and shared parameters, checked against finite differences and trained with SGD through ORT.</summary>
public sealed class CompositeTests(ITestOutputHelper output)
{
    private static readonly long[] Labels = [0, 2, 1, -100, 2, 0, 1, 1];

    private static GradCase Mlp(DType type) => new("MLP", $"MLP {type.Name()}",
        [Const(P(8, 6)), Ints(Labels, 8), P(6, 5), P(5), P(5, 3), P(3)],
        (g, x) => [Models.Mlp(g, x[0], x[1], x[2], x[3], x[4], x[5])], type);

    private static GradCase Attention(DType type) => new("Attention", $"Attention {type.Name()}",
        [P(2, 5, 8).As("batch", "seq", 8), P(8), P(8), P(8, 24), P(24), P(8, 8), P(8)],
        (g, x) => [Models.AttentionBlock(g, x[0], x[1], x[2], x[3], x[4], x[5], x[6], nHead: 2, maxT: 7)], type);

    [Theory]
    [InlineData("mlp")]
    [InlineData("attention")]
    public void Gradients_MatchFiniteDifferences(string model)
    {
        var c = model == "mlp" ? Mlp(DType.Double) : Attention(DType.Double);
        var r = GradCheck.Run(c);
        output.WriteLine($"GRADCHECK\t{c.Op}\t{c.Label}\tdouble\tmax_abs={r.MaxAbsError:E2}\tmax_rel={r.MaxRelError:E2}\tn={r.Checked}");
        Assert.True(r.WorstRatio <= 1, $"{c.Label}: max error {r.MaxAbsError:E3}");
        Assert.True(r.Checked > 50);
    }

    [Theory]
    [InlineData("mlp", 0.5, 30)]
    [InlineData("attention", 0.05, 30)]
    public void Loss_FallsUnderSgd_RunThroughOrt(string model, double lr, int steps)
    {
        var c = model == "mlp" ? Mlp(DType.Float) : Attention(DType.Float);
        var rng = new Random(7);
        var data = c.Inputs.Select(i => i.Values ?? Enumerable.Range(0, (int)i.Dims.Aggregate(1L, (a, b) => a * b)).Select(_ => 0.5 * Rand.Normal(rng)).ToArray()).ToArray();
        var diff = Enumerable.Range(0, c.Inputs.Length).Where(i => c.Inputs[i].Diff).ToArray();
        using var train = new OrtModel(GradCheck.Graph(c, data, withGradients: true));
        var losses = new List<double>();
        for (int step = 0; step < steps; step++)
        {
            var r = train.Run(diff.ToDictionary(i => $"x{i}", i => new HostTensor(data[i], c.Inputs[i].Dims, DType.Float)));
            losses.Add(r["loss"][0]);
            foreach (var i in diff)
            {
                var grad = r[$"grad.x{i}"];
                for (int k = 0; k < grad.Length; k++) data[i][k] -= lr * grad[k];
            }
        }
        output.WriteLine($"{model}: loss {losses[0]:F4} -> {losses[^1]:F4}");
        Assert.All(losses, l => Assert.True(double.IsFinite(l)));
        Assert.True(losses[^1] < 0.7 * losses[0], $"{model}: loss went {losses[0]:F4} -> {losses[^1]:F4}");
        Assert.True(losses.Zip(losses.Skip(1)).Count(p => p.Second < p.First) >= steps * 2 / 3, "loss did not fall on most steps: " + string.Join(", ", losses.Select(l => l.ToString("F3"))));
    }

    [Fact]
    public void TrainingAndEvalGraphs_HaveStableSignatures()
    {
        static ModelOutputs Define(GraphBuilder g, bool training)
        {
            var x = g.Input("x", DType.Float, Shape.Of("batch", 6));
            var y = g.Input("labels", DType.Int64, Shape.Of("batch"));
            var w1 = g.Parameter("fc1.weight", Shape.Of(6, 5));
            var b1 = g.Parameter("fc1.bias", Shape.Of(5));
            var w2 = g.Parameter("fc2.weight", Shape.Of(5, 3));
            var b2 = g.Parameter("fc2.bias", Shape.Of(3));
            var h = g.Dropout(g.Relu(g.MatMul(x, w1) + b1), 0.1, training, seed: 1);
            var logits = g.MatMul(h, w2) + b2;
            return new ModelOutputs(g.SoftmaxCrossEntropyLoss(logits, y), [new("logits", logits)]);
        }
        var train = TrainingGraph.BuildTraining("mlp", Define);
        var eval = TrainingGraph.BuildEval("mlp", Define);
        Assert.Equal(["loss", "grad.fc1.weight", "grad.fc1.bias", "grad.fc2.weight", "grad.fc2.bias"], train.Outputs.Select(o => o.Name));
        Assert.Equal(["loss", "logits"], eval.Outputs.Select(o => o.Name));
        Assert.Contains(train.Nodes, n => n.OpType == "Dropout");
        Assert.DoesNotContain(eval.Nodes, n => n.OpType == "Dropout");
        Assert.Equal(Shape.Of("batch", 3), eval.Outputs[1].Shape);
        Assert.Equal(Shape.Of(6, 5), train.Outputs[1].Shape);
        Assert.Equal(ModelWriter.ToBytes(train), ModelWriter.ToBytes(TrainingGraph.BuildTraining("mlp", Define)));

        // Both load and run in ORT with the symbolic batch set to 4.
        var rng = new Random(3);
        HostTensor R(params long[] d) => new(Enumerable.Range(0, (int)d.Aggregate(1L, (a, b) => a * b)).Select(_ => Rand.Normal(rng)).ToArray(), d, DType.Float);
        var feeds = new Dictionary<string, HostTensor>
        {
            ["x"] = R(4, 6), ["labels"] = new([0, 1, 2, 1], [4], DType.Int64),
            ["fc1.weight"] = R(6, 5), ["fc1.bias"] = R(5), ["fc2.weight"] = R(5, 3), ["fc2.bias"] = R(3),
        };
        using var te = new OrtModel(eval);
        var r = te.Run(feeds);
        Assert.Equal(12, r["logits"].Length);
        Assert.True(r["loss"][0] > 0 && double.IsFinite(r["loss"][0]));
        using var tt = new OrtModel(train);
        Assert.Equal(30, tt.Run(feeds)["grad.fc1.weight"].Length);
    }

    [Fact]
    public void FrozenParameters_GetNoGradientOutputsOrBackwardNodes_BuiltOrCutFromTheFullGraph()
    {
        static ModelOutputs Define(GraphBuilder g, bool training)
        {
            var x = g.Input("x", DType.Float, Shape.Of("batch", 6));
            var y = g.Input("labels", DType.Int64, Shape.Of("batch"));
            var h = g.Relu(g.MatMul(x, g.Parameter("fc1.weight", Shape.Of(6, 5))) + g.Parameter("fc1.bias", Shape.Of(5)));
            var logits = g.MatMul(h, g.Parameter("fc2.weight", Shape.Of(5, 3))) + g.Parameter("fc2.bias", Shape.Of(3));
            return new ModelOutputs(g.SoftmaxCrossEntropyLoss(logits, y));
        }
        string[] frozen = ["fc1.weight", "fc1.bias"];
        var full = TrainingGraph.BuildTraining("mlp", Define);
        var built = TrainingGraph.BuildTraining("mlp", Define, frozen);
        var cut = ModelReader.FromProto(TrainingGraph.Freeze(ModelWriter.ToProto(full), frozen));
        foreach (var g in new[] { built, cut })
        {
            Assert.Equal(["loss", "grad.fc2.weight", "grad.fc2.bias"], g.Outputs.Select(o => o.Name));
            Assert.Equal(full.Inputs.Select(i => i.Name), g.Inputs.Select(i => i.Name));            // frozen parameters stay inputs
            // The backward pass stops at fc2's input: nothing goes back through the ReLU to fc1 (dW1 = xᵀ·dh would read x).
            Assert.DoesNotContain(g.Nodes, n => n.Name.StartsWith("grad/", StringComparison.Ordinal) && n.Inputs.Any(i => i?.Name == "x"));
            Assert.True(g.Nodes.Count < full.Nodes.Count, $"{g.Nodes.Count} nodes, the full graph has {full.Nodes.Count}");
        }
        Assert.Contains(full.Nodes, n => n.Name.StartsWith("grad/", StringComparison.Ordinal) && n.Inputs.Any(i => i?.Name == "x"));
        Assert.Throws<GraphBuildException>(() => TrainingGraph.BuildTraining("mlp", Define, ["fc3.weight"]));

        var rng = new Random(4);
        HostTensor R(params long[] d) => new(Enumerable.Range(0, (int)d.Aggregate(1L, (a, b) => a * b)).Select(_ => Rand.Normal(rng)).ToArray(), d, DType.Float);
        var feeds = new Dictionary<string, HostTensor>
        {
            ["x"] = R(4, 6), ["labels"] = new([0, 1, 2, 1], [4], DType.Int64),
            ["fc1.weight"] = R(6, 5), ["fc1.bias"] = R(5), ["fc2.weight"] = R(5, 3), ["fc2.bias"] = R(3),
        };
        using var f = new OrtModel(full);
        using var b = new OrtModel(built);
        using var c = new OrtModel(cut);
        var (rf, rb, rc) = (f.Run(feeds), b.Run(feeds), c.Run(feeds));
        foreach (var o in new[] { "loss", "grad.fc2.weight", "grad.fc2.bias" })
        {
            Assert.Equal(rf[o], rb[o]);
            Assert.Equal(rf[o], rc[o]);
        }
    }
}

using Optimum.Tests;
using Xunit;
using Xunit.Abstractions;

namespace Optimum.Onnx.Tests;

/// <summary>
/// Mixed precision by the graph builder (<see cref="GraphBuilder.Autocast"/>): MatMul and Gemm compute in float16/bfloat16
/// between casts, the loss and softmax stay float32, parameters and gradients are float32 (master weights). What ONNX Runtime's
/// CPU provider can run of it is checked by running it.
/// </summary>
public sealed class AutocastTests(ITestOutputHelper output)
{
    // x (4, 6) -> Linear(6, 5) as MatMul + bias -> Relu -> Linear(5, 3) as Gemm(transB) -> cross-entropy
    private static ModelOutputs Mlp(GraphBuilder g, DType? autocast)
    {
        g.Autocast = autocast;
        var x = g.Input("x", DType.Float, Shape.Of(4, 6));
        var y = g.Input("labels", DType.Int64, Shape.Of(4));
        var h = g.Relu(g.MatMul(x, g.Parameter("fc1.weight", Shape.Of(6, 5))) + g.Parameter("fc1.bias", Shape.Of(5)));
        var logits = g.Gemm(h, g.Parameter("fc2.weight", Shape.Of(3, 5)), g.Parameter("fc2.bias", Shape.Of(3)), transB: true);
        return new(g.SoftmaxCrossEntropyLoss(logits, y));
    }

    private static GraphBuilder Training(DType? autocast) => TrainingGraph.BuildTraining("mlp", (g, _) => Mlp(g, autocast));

    /// <summary>The MLP's inputs and weights, N(0, 0.25) from <paramref name="seed"/>, with <paramref name="labels"/>.</summary>
    private static Dictionary<string, HostTensor> MlpFeeds(int seed, double[] labels)
    {
        var rng = new Random(seed);
        HostTensor Randn(params long[] dims) => new(Enumerable.Range(0, (int)dims.Aggregate(1L, (a, b) => a * b)).Select(_ => Rand.Normal(rng) * 0.5).ToArray(), dims, DType.Float);
        return new()
        {
            ["x"] = Randn(4, 6), ["labels"] = new(labels, [4], DType.Int64),
            ["fc1.weight"] = Randn(6, 5), ["fc1.bias"] = Randn(5), ["fc2.weight"] = Randn(3, 5), ["fc2.bias"] = Randn(3),
        };
    }

    [Theory]
    [InlineData(DType.Float16)]
    [InlineData(DType.BFloat16)]
    public void Autocast_PutsMatMulAndGemmInLowPrecision_AndKeepsLossAndGradientsFloat32(DType low)
    {
        var g = Training(low);
        var nodes = GraphChecks.LiveNodes(g);
        var linear = nodes.Where(n => n.OpType is "MatMul" or "Gemm").ToArray();
        Assert.True(linear.Length >= 5, $"forward and backward products expected, got {linear.Length}");      // 2 forward, 3+ backward
        foreach (var n in linear)
        {
            Assert.All(n.Inputs.Where(i => i is not null), i => Assert.Equal(low, i!.Type));
            Assert.Equal(low, n.Outputs[0].Type);
        }
        Assert.All(nodes.Where(n => n.OpType is "SoftmaxCrossEntropyLoss" or "Relu" or "Softmax" or "LogSoftmax"),
            n => Assert.Equal(DType.Float, n.Inputs[0]!.Type));
        Assert.All(g.TrainableParameters, p => Assert.Equal(DType.Float, p.Type));
        foreach (var p in g.TrainableParameters)
        {
            var grad = Assert.Single(g.Outputs, o => o.Name == TrainingGraph.GradPrefix + p.Name);
            Assert.Equal((DType.Float, p.Shape.ToString()), (grad.Type, grad.Shape.ToString()));
        }
        Assert.Contains(nodes, n => n.OpType == "Cast" && n.GetInt("to", -1) == (long)low);
        // Without autocast: not one cast.
        Assert.DoesNotContain(GraphChecks.LiveNodes(Training(null)), n => n.OpType == "Cast");
    }

    [Fact]
    public void Autocast_RefusesOtherTypes() =>
        Assert.Contains("float16 or bfloat16, got double", Assert.Throws<ArgumentException>(() => new GraphBuilder("g").Autocast = DType.Double).Message);

    /// <summary>
    /// float16 on ONNX Runtime's CPU provider: the loss and gradients are float32's to float16's precision (ORT 1.31 has a CPU
    /// float16 MatMul; for ops without a float16 CPU kernel ORT inserts casts to float32 itself, so this does not prove float16
    /// numerics throughout). bfloat16 has no CPU MatMul, which ORT reports as a missing kernel after checking the graph.
    /// </summary>
    [Theory]
    [InlineData(DType.Float16)]
    [InlineData(DType.BFloat16)]
    public void OnTheCpu_LowPrecisionTrainingGraph_MatchesFloat32OrIsAMissingKernel(DType low)
    {
        var feeds = MlpFeeds(11, [0, 2, 1, 2]);
        using var reference = new OrtModel(Training(null));
        var want = reference.Run(feeds);
        OrtModel model;
        try { model = new OrtModel(Training(low)); }
        catch (Microsoft.ML.OnnxRuntime.OnnxRuntimeException e)
        {
            output.WriteLine($"{low.Name()} on the CPU: {e.Message}");
            // A missing kernel, found after ORT type-checked and shape-inferred the whole graph: not a malformed graph.
            Assert.Contains("[ErrorCode:NotImplemented] Could not find an implementation for MatMul", e.Message);
            Assert.Equal(DType.BFloat16, low);      // float16 has CPU kernels (or ORT's own float32 fallback casts)
            return;
        }
        using (model)
        {
            var got = model.Run(feeds);
            foreach (var (name, w) in want)
            {
                double scale = w.Max(Math.Abs), err = w.Zip(got[name]).Max(p => Math.Abs(p.First - p.Second));
                output.WriteLine($"{low.Name()} on the CPU: {name} max |low - fp32| = {err:E2} (max |fp32| {scale:E2})");
                Assert.True(err <= 1e-2 * Math.Max(scale, 1e-3), $"{name}: {err} against {scale}");
            }
        }
    }

    /// <summary>
    /// What the CPU makes of float16 products, as a closed form: 1 + 2^-12 is not a float16 (it rounds to 1), so a float16
    /// product of it and 1 is 1; ONNX Runtime 1.31's CPU provider gives 1 + 2^-12 at every optimisation level. It has no float16
    /// MatMul kernel on this CPU, so it runs the node in float32 between casts of its own and then drops the float32 -&gt; float16
    /// -&gt; float32 round trip those casts make with the graph's: a product's operands are not rounded on the CPU. Casts that do not
    /// meet one of ORT's (a gradient cast down into a float16 chain) still round and saturate at 65504, which is why an fp16 run's
    /// scaled gradients overflow on the CPU too (MixedPrecisionTrainingTests). So CPU fp16 runs check the casts, the loss scaling
    /// and the checkpoints, not float16 numerics; the README and the closing note say so. If this starts failing, ORT rounds on the
    /// CPU and the fp16 parity tests can be tightened.
    /// </summary>
    [Theory]
    [InlineData(Microsoft.ML.OnnxRuntime.GraphOptimizationLevel.ORT_DISABLE_ALL)]
    [InlineData(Microsoft.ML.OnnxRuntime.GraphOptimizationLevel.ORT_ENABLE_ALL)]
    public void OnTheCpu_Float16Products_AreComputedInFloat32(Microsoft.ML.OnnxRuntime.GraphOptimizationLevel level)
    {
        GraphBuilder Product(DType? autocast)
        {
            var g = new GraphBuilder("product") { Autocast = autocast };
            var x = g.Input("x", DType.Float, Shape.Of(1, 2));
            g.Output(g.MatMul(x, g.Input("w", DType.Float, Shape.Of(2, 1))), "y");
            return g;
        }
        float odd = 1f + MathF.Pow(2, -12);
        Assert.Equal(1f, (float)(Half)odd);
        var feeds = new Dictionary<string, HostTensor> { ["x"] = new([odd, 0.0], [1, 2], DType.Float), ["w"] = new([1.0, 1.0], [2, 1], DType.Float) };
        using var low = new OrtModel(ModelWriter.ToBytes(Product(DType.Float16)), level);
        Assert.Contains(Product(DType.Float16).Nodes, n => n.OpType == "MatMul" && n.Inputs[0]!.Type == DType.Float16);
        Assert.Equal(odd, (float)low.Run(feeds)["y"][0]);
    }

    /// <summary>A loss-scaled training graph's gradients are the unscaled graph's times the scale (a power of two: exactly), and its loss is the unscaled one.</summary>
    [Fact]
    public void LossScale_MultipliesTheGradients_NotTheLoss()
    {
        var feeds = MlpFeeds(5, [1, 0, 2, 2]);
        using var plain = new OrtModel(Training(null));
        var scaledGraph = TrainingGraph.BuildTraining("mlp", (g, _) => Mlp(g, null), lossScale: true);
        Assert.Contains(scaledGraph.Inputs, i => i.Name == Optimum.Core.GraphInputs.LossScale && i.Type == DType.Float && i.Rank == 0);
        using var scaled = new OrtModel(scaledGraph);
        var want = plain.Run(feeds);
        var got = scaled.Run(new Dictionary<string, HostTensor>(feeds) { [Optimum.Core.GraphInputs.LossScale] = new([1024.0], [], DType.Float) });
        Assert.Equal(want["loss"], got["loss"]);
        foreach (var name in want.Keys.Where(k => k.StartsWith(TrainingGraph.GradPrefix, StringComparison.Ordinal)))
            Assert.Equal(want[name].Select(v => v * 1024), got[name]);
    }
}

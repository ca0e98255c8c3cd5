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
        var rng = new Random(11);
        HostTensor Randn(params long[] dims) => new(Enumerable.Range(0, (int)dims.Aggregate(1L, (a, b) => a * b)).Select(_ => Rand.Normal(rng) * 0.5).ToArray(), dims, DType.Float);
        var feeds = new Dictionary<string, HostTensor>
        {
            ["x"] = Randn(4, 6), ["labels"] = new([0, 2, 1, 2], [4], DType.Int64),
            ["fc1.weight"] = Randn(6, 5), ["fc1.bias"] = Randn(5), ["fc2.weight"] = Randn(3, 5), ["fc2.bias"] = Randn(3),
        };
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
}

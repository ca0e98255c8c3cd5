using Optimum.Onnx.Lora;
using Optimum.Tests;
using Xunit;

namespace Optimum.Onnx.Tests;

/// <summary>LoRA on the linear-layer forms the builder recognises, against numbers computed here (double precision).</summary>
public sealed class LoraGraphTests
{
    private const long N = 3, In = 5, Out = 4;
    private static readonly LoraConfig Config = new() { R = 2, LoraAlpha = 3, TargetModules = ["fc"] };

    /// <summary>The linear forms: (weight stored (out, in)?, build y from x and W).</summary>
    private static readonly string[] FormNames = ["MatMul(x, W)", "MatMul(x, Transpose(W))", "Gemm(x, W, transB)", "Gemm(x, W)", "Gemm(xT, W, transA, transB)"];
    public static TheoryData<string> Forms => new(FormNames);

    private static (bool OutIn, Func<GraphBuilder, Value, Value, Value> Y) Form(string f) => f switch
    {
        "MatMul(x, W)" => (false, (g, x, w) => g.MatMul(x, w)),
        "MatMul(x, Transpose(W))" => (true, (g, x, w) => g.MatMul(x, g.Transpose(w))),
        "Gemm(x, W, transB)" => (true, (g, x, w) => g.Gemm(x, w, transB: true)),
        "Gemm(x, W)" => (false, (g, x, w) => g.Gemm(x, w)),
        _ => (true, (g, x, w) => g.Gemm(g.Transpose(x), w, transA: true, transB: true)),
    };

    private static GraphBuilder Graph(string form, bool withGradients)
    {
        var (outIn, y) = Form(form);
        var g = new GraphBuilder("lora");
        var x = g.Parameter("x", Shape.Of(N, In), DType.Double);
        var w = g.Parameter("fc.weight", outIn ? Shape.Of(Out, In) : Shape.Of(In, Out), DType.Double);
        var output = LoraGraph.Build(g, Config, training: false, () => y(g, x, w));
        g.Output(output, "y");
        var loss = g.ReduceSum(output * g.Sin(output), [], keepDims: false);
        if (withGradients) TrainingGraph.AddGradientOutputs(g, loss);
        else g.Output(loss, "loss");
        return g;
    }

    private static Dictionary<string, HostTensor> Feeds(string form, Random rng, out double[] x, out double[] w, out double[] a, out double[] b)
    {
        double[] R(long n) => Enumerable.Range(0, (int)n).Select(_ => Rand.Normal(rng)).ToArray();
        (x, w, a, b) = (R(N * In), R(In * Out), R(Config.R * In), R(Out * Config.R));
        var outIn = Form(form).OutIn;
        return new()
        {
            ["x"] = new(x, [N, In]),
            ["fc.weight"] = new(w, outIn ? [Out, In] : [In, Out]),
            ["fc.lora_A.weight"] = new(a, [Config.R, In]),
            ["fc.lora_B.weight"] = new(b, [Out, Config.R]),
        };
    }

    [Theory]
    [MemberData(nameof(Forms))]
    public void EveryLinearForm_AddsScalingTimesBA_InItsLayout(string form)
    {
        var g = Graph(form, withGradients: false);
        var m = Assert.Single(LoraGraph.Modules(g));
        Assert.Equal(new LoraModule("fc", In, Out, FanInFanOut: !Form(form).OutIn), m);
        Assert.Equal(m, Assert.Single(LoraGraph.Modules(ModelReader.FromBytes(ModelWriter.ToBytes(g)))));   // carried in the ONNX file's metadata
        var feeds = Feeds(form, new Random(3), out var x, out var w, out var a, out var b);
        using var model = new OrtModel(g);
        var y = model.Run(feeds)["y"];
        double s = Config.LoraAlpha / Config.R;
        for (int n = 0; n < N; n++)
            for (int o = 0; o < Out; o++)
            {
                double expected = 0;
                for (int i = 0; i < In; i++)
                {
                    double wi = Form(form).OutIn ? w[o * In + i] : w[i * Out + o];
                    double ba = Enumerable.Range(0, Config.R).Sum(k => b[o * Config.R + k] * a[k * In + i]);
                    expected += x[n * In + i] * (wi + s * ba);
                }
                Assert.True(Math.Abs(y[n * Out + o] - expected) <= 1e-12 * (1 + Math.Abs(expected)), $"{form} y[{n}, {o}] = {y[n * Out + o]}, expected {expected}");
            }
    }

    [Theory]
    [MemberData(nameof(Forms))]
    public void Gradients_OfXWAAndB_MatchFiniteDifferences(string form)
    {
        var feeds = Feeds(form, new Random(5), out _, out _, out _, out _);
        using var train = new OrtModel(Graph(form, withGradients: true));
        using var eval = new OrtModel(Graph(form, withGradients: false));
        var analytic = train.Run(feeds);
        var (eps, atol, rtol) = GradCheck.Tolerance(DType.Double);
        foreach (var name in feeds.Keys.ToArray())
        {
            var t = feeds[name];
            for (int k = 0; k < t.Values.Length; k++)
            {
                double keep = t.Values[k];
                t.Values[k] = keep + eps; double plus = eval.Run(feeds, ["loss"])["loss"][0];
                t.Values[k] = keep - eps; double minus = eval.Run(feeds, ["loss"])["loss"][0];
                t.Values[k] = keep;
                double fd = (plus - minus) / (2 * eps), got = analytic["grad." + name][k];
                Assert.True(Math.Abs(got - fd) <= atol + rtol * Math.Abs(fd), $"{form} d loss / d {name}[{k}]: analytic {got:E6}, finite difference {fd:E6}");
            }
        }
    }

    [Fact]
    public void SameDefinition_GivesTheSameBytes()
    {
        foreach (var f in FormNames)
            Assert.Equal(ModelWriter.ToBytes(Graph(f, withGradients: true)), ModelWriter.ToBytes(Graph(f, withGradients: true)));
    }

    [Fact]
    public void WithoutARewrite_TheGraphIsUnchanged_AndRewritesDoNotNest()
    {
        var plain = new GraphBuilder("g");
        Form("Gemm(x, W, transB)").Y(plain, plain.Parameter("x", Shape.Of(N, In)), plain.Parameter("fc.weight", Shape.Of(Out, In)));
        Assert.Equal(["Gemm"], plain.Nodes.Select(n => n.OpType));
        var g = new GraphBuilder("g");
        var x = g.Parameter("x", Shape.Of(N, In));
        var w = g.Parameter("fc.weight", Shape.Of(Out, In));
        var uses = new List<string>();
        g.LinearRewrite = (use, y) => { uses.Add(use.Module); return g.MatMul(y, g.Transpose(g.Parameter("other.weight", Shape.Of(Out, Out)))); };
        g.MatMul(x, g.Transpose(w));
        Assert.Equal(["fc"], uses);                                     // the rewrite's own linear layer is not offered again
        Assert.Throws<GraphBuildException>(() => LoraGraph.Build(g, Config, false, () => 0));
    }
}

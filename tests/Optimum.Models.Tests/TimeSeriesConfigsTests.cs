using Optimum.Hub;
using Optimum.Models;
using Optimum.Onnx;
using Optimum.Tests;
using Xunit;
using Xunit.Abstractions;
using Optimum.Core;

namespace Optimum.Models.Tests;

/// <summary>
/// Time-series configs other than the fixtures': every distribution head, every scaler, several static
/// categoricals, static reals, dynamic reals, missing values, several layers, dropout and LayerDrop, and
/// ProbSparse attention that really drops queries (u &lt; L). Gradients of the whole training graph against
/// central finite differences of its own loss (double precision; Informer with distilling in float, as ONNX
/// Runtime's CPU Conv has no double kernel).
/// </summary>
public sealed class TimeSeriesConfigsTests(ITestOutputHelper output)
{
    public static TheoryData<string> Configs() => ["tst-normal-std-2cat-3x3", "informer-probsparse-negbin-nodistil", "tst-studentt-noscaling-dropout", "informer-distil-3layers-float"];

    private static TimeSeriesConfig Config(string name) => name switch
    {
        "tst-normal-std-2cat-3x3" => new TimeSeriesConfig
        {
            ModelType = "time_series_transformer", PredictionLength = 4, ContextLength = 8, LagsSequence = [1, 3, 4], DistributionOutput = "normal", Scaling = "std",
            NumStaticCategoricalFeatures = 2, Cardinality = [3, 5], EmbeddingDimension = [2, 3], NumStaticRealFeatures = 1, NumTimeFeatures = 2, NumDynamicRealFeatures = 1,
            DModel = 8, EncoderLayers = 3, DecoderLayers = 3, EncoderAttentionHeads = 2, DecoderAttentionHeads = 4, EncoderFfnDim = 6, DecoderFfnDim = 5,
            ActivationFunction = "gelu_new", Dropout = 0, AttentionDropout = 0, ActivationDropout = 0, EncoderLayerdrop = 0, DecoderLayerdrop = 0,
        },
        "informer-probsparse-negbin-nodistil" => new TimeSeriesConfig
        {
            ModelType = "informer", PredictionLength = 6, ContextLength = 10, LagsSequence = [1, 2, 5], DistributionOutput = "negative_binomial", Scaling = "mean",
            NumStaticCategoricalFeatures = 1, Cardinality = [4], EmbeddingDimension = [2], NumTimeFeatures = 1,
            DModel = 8, EncoderLayers = 2, DecoderLayers = 2, EncoderAttentionHeads = 2, DecoderAttentionHeads = 2, EncoderFfnDim = 6, DecoderFfnDim = 6,
            ActivationFunction = "relu", AttentionType = "prob", SamplingFactor = 1, Distil = false,
            Dropout = 0, AttentionDropout = 0, ActivationDropout = 0, EncoderLayerdrop = 0, DecoderLayerdrop = 0,
        },
        "tst-studentt-noscaling-dropout" => new TimeSeriesConfig
        {
            ModelType = "time_series_transformer", PredictionLength = 3, ContextLength = 5, LagsSequence = [1, 2], DistributionOutput = "student_t", Scaling = "none",
            NumTimeFeatures = 2, DModel = 6, EncoderLayers = 1, DecoderLayers = 2, EncoderAttentionHeads = 3, DecoderAttentionHeads = 2, EncoderFfnDim = 4, DecoderFfnDim = 4,
            ActivationFunction = "silu", Dropout = 0.2, AttentionDropout = 0.1, ActivationDropout = 0.1, EncoderLayerdrop = 0.3, DecoderLayerdrop = 0.3,
        },
        _ => new TimeSeriesConfig
        {
            ModelType = "informer", PredictionLength = 4, ContextLength = 12, LagsSequence = [1, 2, 3], DistributionOutput = "student_t", Scaling = "mean",
            NumStaticCategoricalFeatures = 1, Cardinality = [2], EmbeddingDimension = [2], NumTimeFeatures = 2,
            DModel = 8, EncoderLayers = 3, DecoderLayers = 1, EncoderAttentionHeads = 2, DecoderAttentionHeads = 2, EncoderFfnDim = 6, DecoderFfnDim = 6,
            // Every query kept (u = L): a dropped query set changes discretely, which a float step of 1e-2 would cross.
            ActivationFunction = "gelu", AttentionType = "prob", SamplingFactor = 100, Distil = true,
            Dropout = 0, AttentionDropout = 0, ActivationDropout = 0, EncoderLayerdrop = 0, DecoderLayerdrop = 0,
        },
    };

    /// <summary>Parameters (HF init scaled up so every path carries gradient) and a batch of 3 windows with missing values.</summary>
    private static (ParameterInfo[] Ps, double[][] W, Dictionary<string, HostTensor> Feeds) Setup(TimeSeriesConfig cfg, GraphBuilder graph, DType dt, Random rng)
    {
        bool dbl = dt == DType.Double;
        var ps = graph.Parameters.Select(p => new ParameterInfo(p.Name, p.Shape.ToStatic()) { Trainable = !graph.IsBuffer(p) }).ToArray();
        var init = ModelKinds.Initialize(ps, cfg, 3);
        // Larger weights than HF's init so that every path carries gradient (less in float, whose large step
        // needs a smooth loss); buffers as initialised.
        double gain = dbl ? 10 : 3;
        var w = ps.Select((p, i) => p.Trainable ? init[i].Select(v => v * gain + 0.05 * Rand.Normal(rng)).ToArray() : init[i].Select(v => (double)v).ToArray()).ToArray();
        int b = 3, past = cfg.PastLength, h = cfg.PredictionLength, tf = cfg.TimeFeatureCount;
        bool counts = cfg.DistributionOutput == "negative_binomial";
        double Value() => counts ? rng.Next(0, 9) : 5 + 2 * Rand.Normal(rng);
        var feeds = ps.Select((p, i) => (p, i)).ToDictionary(x => x.p.Name, x => new HostTensor(w[x.i], x.p.Shape, dt));
        feeds["past_values"] = new HostTensor(Enumerable.Range(0, b * past).Select(_ => Value()).ToArray(), [b, past], dt);
        // Missing values: two in the past (one inside the context), one in the future.
        var observed = Enumerable.Repeat(1.0, b * past).ToArray();
        observed[1] = 0;
        observed[past + past - 2] = 0;
        feeds["past_observed_mask"] = new HostTensor(observed, [b, past], dt);
        feeds["past_time_features"] = new HostTensor(Enumerable.Range(0, b * past * tf).Select(_ => Rand.Normal(rng)).ToArray(), [b, past, tf], dt);
        feeds["future_values"] = new HostTensor(Enumerable.Range(0, b * h).Select(_ => Value()).ToArray(), [b, h], dt);
        var futureObserved = Enumerable.Repeat(1.0, b * h).ToArray();
        futureObserved[h + 1] = 0;
        feeds["future_observed_mask"] = new HostTensor(futureObserved, [b, h], dt);
        feeds["future_time_features"] = new HostTensor(Enumerable.Range(0, b * h * tf).Select(_ => Rand.Normal(rng)).ToArray(), [b, h, tf], dt);
        if (cfg.NumStaticCategoricalFeatures > 0)
            feeds["static_categorical_features"] = new HostTensor(Enumerable.Range(0, b).SelectMany(r => cfg.Cardinality.Select(k => (double)((r + 1) % k))).ToArray(), [b, cfg.NumStaticCategoricalFeatures], DType.Int64);
        if (cfg.NumStaticRealFeatures > 0)
            feeds["static_real_features"] = new HostTensor(Enumerable.Range(0, b * cfg.NumStaticRealFeatures).Select(_ => Rand.Normal(rng)).ToArray(), [b, cfg.NumStaticRealFeatures], dt);
        if (graph.Inputs.Any(i => i.Name == GraphInputs.DropoutSeed)) feeds[GraphInputs.DropoutSeed] = new HostTensor([11], [], DType.Int64);
        return (ps, w, feeds);
    }

    [Theory]
    [MemberData(nameof(Configs))]
    public void TrainingGradients_MatchFiniteDifferences(string name)
    {
        var cfg = Config(name);
        bool dbl = !name.EndsWith("-float", StringComparison.Ordinal);
        var dt = dbl ? DType.Double : DType.Float;
        var train = TrainingGraph.BuildTraining("ts", (g, t) => TimeSeriesModel.Define(g, t, cfg, dt));
        Assert.Equal(cfg.EncoderOutputLength, cfg.IsInformer && cfg.Distil ? 3 : cfg.ContextLength);
        var rng = new Random(5);
        var (ps, w, feeds) = Setup(cfg, train, dt, rng);
        using var model = new OrtModel(train);
        var analytic = model.Run(feeds);
        var trainable = ps.Select((p, i) => (p, i)).Where(x => x.p.Trainable).ToArray();
        Assert.All(trainable, x => Assert.True(analytic.ContainsKey("grad." + x.p.Name)));
        double Loss() => model.Run(feeds, ["loss"])["loss"][0];
        var (maxAbs, n) = dbl
            ? SampledGradCheck.Run(trainable.Select(x => x.p).ToArray(), trainable.Select(x => w[x.i]).ToArray(), analytic, Loss, perTensor: 3, rng)
            : SampledGradCheck.RunFloat(trainable.Select(x => x.p).ToArray(), trainable.Select(x => w[x.i]).ToArray(), analytic, Loss, perTensor: 3, rng);
        output.WriteLine($"TimeSeries {name} ({dt.Name()}): loss {analytic["loss"][0]:F5}, {n} gradient elements, max |analytic - fd| = {maxAbs:E2}");
    }

    /// <summary>
    /// The graph's loss equals −mean log-likelihood computed independently with MathNet.Numerics from the graph's
    /// distribution parameters, loc and scale: Student-T and normal through the affine map, negative binomial
    /// with logits + log(scale), averaged over observed future steps only.
    /// </summary>
    [Theory]
    [InlineData("tst-normal-std-2cat-3x3")]
    [InlineData("informer-probsparse-negbin-nodistil")]
    [InlineData("tst-studentt-noscaling-dropout")]
    public void Loss_IsTheMaskedNegativeLogLikelihoodOfItsDistribution(string name)
    {
        var cfg = Config(name);
        var eval = TrainingGraph.BuildEval("ts", (g, t) => TimeSeriesModel.Define(g, t, cfg, DType.Double));
        var (_, _, feeds) = Setup(cfg, eval, DType.Double, new Random(6));
        using var model = new OrtModel(eval);
        var r = model.Run(feeds);
        var y = feeds["future_values"].Values;
        var mask = feeds["future_observed_mask"].Values;
        int h = cfg.PredictionLength;
        double sum = 0, count = 0;
        for (int i = 0; i < y.Length; i++)
        {
            if (mask[i] == 0) continue;
            double loc = r["loc"][i / h], scale = r["scale"][i / h];
            double lp = cfg.DistributionOutput switch
            {
                "student_t" => new MathNet.Numerics.Distributions.StudentT(loc + scale * r["params.1"][i], scale * r["params.2"][i], r["params.0"][i]).DensityLn(y[i]),
                "normal" => new MathNet.Numerics.Distributions.Normal(loc + scale * r["params.0"][i], scale * r["params.1"][i]).DensityLn(y[i]),
                _ => new MathNet.Numerics.Distributions.NegativeBinomial(r["params.0"][i], 1 / (1 + Math.Exp(r["params.1"][i] + Math.Log(scale)))).ProbabilityLn((int)y[i]),
            };
            sum -= lp;
            count++;
        }
        Assert.Equal(y.Length - 1, (int)count);
        double expected = sum / count;
        Assert.True(Math.Abs(r["loss"][0] - expected) <= 1e-9 * Math.Abs(expected), $"{name}: graph loss {r["loss"][0]:R} vs MathNet {expected:R}");
        output.WriteLine($"TimeSeries {name}: loss {r["loss"][0]:F10} = MathNet's masked NLL {expected:F10}");
    }
}

using Optimum.Hub;
using Optimum.Inference.Forecasting;
using Optimum.Models;
using Optimum.Onnx;
using Optimum.Tests;
using Xunit;
using Xunit.Abstractions;
using Optimum.Core;
using Optimum.Data;

namespace Optimum.Inference.Tests;

/// <summary>Forecasting from the HF fixtures (informer-tiny, tst-tiny) exported to model folders.</summary>
public sealed class ForecasterTests(ITestOutputHelper output)
{
    private static readonly Dictionary<string, string> Folders = [];

    /// <summary>The fixture exported once per test run (graphs + HF weights).</summary>
    private static string Folder(string fixture)
    {
        lock (Folders)
        {
            if (Folders.TryGetValue(fixture, out var dir)) return dir;
            dir = Path.Combine(Repo.TempDir(), fixture);
            Assert.Empty(ModelKinds.Export(Repo.Fixture(fixture), dir));
            return Folders[fixture] = dir;
        }
    }

    /// <summary>The fixture's batch as forecaster inputs: missing values as NaN, past + future time features.</summary>
    private static (SeriesInput[] Series, IReadOnlyDictionary<string, SafeTensor> E) Inputs(string fixture)
    {
        var e = SafeTensorsFile.ReadAll(Path.Combine(Repo.Fixture(fixture), "expected.safetensors"));
        var pv = e["past_values"].ToFloats();
        var mask = e["past_observed_mask"].ToFloats();
        var pt = e["past_time_features"].ToFloats();
        var ft = e["future_time_features"].ToFloats();
        int n = (int)e["past_values"].Shape[0], p = (int)e["past_values"].Shape[1], h = (int)e["future_values"].Shape[1], t = (int)e["past_time_features"].Shape[2];
        var series = Enumerable.Range(0, n).Select(i => new SeriesInput
        {
            Values = Enumerable.Range(0, p).Select(k => mask[i * p + k] == 0 ? float.NaN : pv[i * p + k]).ToArray(),
            TimeFeatures = [.. pt.AsSpan(i * p * t, p * t), .. ft.AsSpan(i * h * t, h * t)],
            StaticCategorical = e.TryGetValue("static_categorical_features", out var c) ? c.ToInt64s().AsSpan(i * (int)c.Shape[1], (int)c.Shape[1]).ToArray() : null,
            StaticReal = e.TryGetValue("static_real_features", out var r) ? r.ToFloats().AsSpan(i * (int)r.Shape[1], (int)r.Shape[1]).ToArray() : null,
        }).ToArray();
        return (series, e);
    }

    [Theory]
    [InlineData("informer-tiny")]
    [InlineData("tst-tiny")]
    public void StepByStepDecoder_EqualsTheTeacherForcedEvalGraph(string fixture)
    {
        var dir = Folder(fixture);
        var (series, e) = Inputs(fixture);
        var future = e["future_values"].ToFloats();
        int h = (int)e["future_values"].Shape[1];
        var paths = series.Select((_, i) => future.AsSpan(i * h, h).ToArray()).ToArray();
        using var f = new Forecaster(dir);
        var steps = f.StepParameters(series, paths);
        // The eval graph over the same window with the same weights, teacher-forced on future_values.
        var cfg = TimeSeriesConfig.FromHf(HfConfig.Load(Path.Combine(dir, "config.json")));
        var g = TrainingGraph.BuildEval("eval", (b, t) => TimeSeriesModel.Define(b, t, cfg));
        var ps = ModelFolder.ReadParameters(dir);
        var w = HfWeights.Load(Path.Combine(dir, "model.safetensors"), ps, out _);
        var feeds = ps.Select((q, i) => (q, i)).ToDictionary(x => x.q.Name, x => new HostTensor(w[x.i].Select(v => (double)v).ToArray(), x.q.Shape, DType.Float));
        foreach (var name in new[] { "past_values", "past_observed_mask", "past_time_features", "future_values", "future_time_features", "static_real_features" })
            if (e.TryGetValue(name, out var te)) feeds[name] = new HostTensor(te.ToFloats().Select(v => (double)v).ToArray(), te.Shape, DType.Float);
        if (e.TryGetValue("static_categorical_features", out var cat)) feeds["static_categorical_features"] = new HostTensor(cat.ToInt64s().Select(v => (double)v).ToArray(), cat.Shape, DType.Int64);
        feeds["future_observed_mask"] = new HostTensor(Enumerable.Repeat(1.0, future.Length).ToArray(), e["future_values"].Shape, DType.Float);
        if (g.Inputs.Any(i => i.Name == GraphInputs.DropoutSeed)) feeds[GraphInputs.DropoutSeed] = new HostTensor([0], [], DType.Int64);
        using var m = new OrtModel(g);
        var r = m.Run(feeds);
        double max = 0;
        for (int k = 0; k < h; k++)
            for (int j = 0; j < cfg.ParameterCount; j++)
                for (int i = 0; i < series.Length; i++)
                {
                    double err = Math.Abs(steps[k][j][i] - r[$"params.{j}"][i * h + k]);
                    max = Math.Max(max, err);
                    Assert.True(err <= 1e-4, $"step {k} param {j} series {i}: {steps[k][j][i]} vs {r[$"params.{j}"][i * h + k]}");
                }
        output.WriteLine($"{fixture}: decoder step by step (prefix k+1) vs teacher-forced eval graph, {h} steps: max |diff| {max:E2}");
    }

    /// <summary>
    /// transformers' generate.sequences were sampled (torch seed 3), so they are compared as draws: each
    /// fixture value's rank among 4,000 of our paths (its PIT) must not be extreme, and the 72 PITs must look
    /// uniform (mean near 1/2, Kolmogorov-Smirnov distance below 0.25).
    /// </summary>
    [Theory]
    [InlineData("informer-tiny")]
    [InlineData("tst-tiny")]
    public void SamplePaths_AreConsistentWithTransformersGenerate(string fixture)
    {
        var (series, e) = Inputs(fixture);
        using var f = new Forecaster(Folder(fixture));
        var fc = f.Predict(series, new ForecastOptions { Samples = 4000, Seed = 1 });
        var hf = e["generate.sequences"].ToFloats();
        int n = series.Length, s = (int)e["generate.sequences"].Shape[1], h = (int)e["generate.sequences"].Shape[2];
        var pits = new List<double>();
        for (int i = 0; i < n; i++)
            for (int j = 0; j < s; j++)
                for (int k = 0; k < h; k++)
                {
                    float v = hf[(i * s + j) * h + k];
                    double pit = (fc[i].Samples.Count(p => p[k] < v) + 0.5 * fc[i].Samples.Count(p => p[k] == v)) / fc[i].Samples.Length;
                    Assert.True(pit is > 0.0005 and < 0.9995, $"{fixture} series {i} path {j} step {k}: value {v} is outside our 0.05-99.95% range (PIT {pit:F4})");
                    pits.Add(pit);
                }
        pits.Sort();
        double ks = pits.Select((q, i) => Math.Max(Math.Abs(q - i / (double)pits.Count), Math.Abs(q - (i + 1) / (double)pits.Count))).Max();
        double mean = pits.Average();
        Assert.InRange(mean, 0.35, 0.65);
        Assert.True(ks < 0.25, $"KS distance {ks:F3}");
        output.WriteLine($"{fixture}: {pits.Count} HF generate values vs 4,000 paths: PIT mean {mean:F3}, min {pits[0]:F4}, max {pits[^1]:F4}, KS {ks:F3}");
    }

    [Fact]
    public void Forecasts_AreReproducible_IndependentOfBatching_AndPrefixConsistent()
    {
        var (series, _) = Inputs("informer-tiny");
        using var f = new Forecaster(Folder("informer-tiny"));
        var o = new ForecastOptions { Samples = 50, Seed = 9, Quantiles = [0.1, 0.9] };
        var a = f.Predict(series, o);
        var b = f.Predict(series, o);
        var alone = f.Predict([series[0]], o);
        var shorter = f.Predict(series, o with { Horizon = 3 });
        var other = f.Predict(series, o with { Seed = 10 });
        for (int s = 0; s < 50; s++)
        {
            Assert.Equal(a[1].Samples[s], b[1].Samples[s]);
            Assert.Equal(a[0].Samples[s], alone[0].Samples[s]);
            Assert.Equal(a[0].Samples[s][..3], shorter[0].Samples[s]);
        }
        Assert.NotEqual(a[0].Samples[0], other[0].Samples[0]);
        // Mean, median and quantiles are those of the paths.
        for (int k = 0; k < 6; k++)
        {
            var col = a[0].Samples.Select(p => p[k]).OrderBy(v => v).ToArray();
            Assert.Equal(col.Average(v => (double)v), a[0].Mean[k], 4);
            Assert.Equal(col[(int)Math.Round(49 * 0.5, MidpointRounding.ToEven)], a[0].Median[k]);
            Assert.Equal(col[(int)Math.Round(49 * 0.1, MidpointRounding.ToEven)], a[0].Quantiles[0.1][k]);
            Assert.True(a[0].Quantiles[0.1][k] <= a[0].Median[k] && a[0].Median[k] <= a[0].Quantiles[0.9][k]);
        }
    }

    [Fact]
    public void BadInput_IsRefusedNamingTheProblem()
    {
        var (series, _) = Inputs("informer-tiny");
        using var f = new Forecaster(Folder("informer-tiny"));
        void Refused(SeriesInput s, string expect, ForecastOptions? o = null) =>
            Assert.Contains(expect, Assert.Throws<ArgumentException>(() => f.Predict([series[0], s], o)).Message);
        Refused(series[1] with { Values = series[1].Values[..5] }, "series 1: 5 values; the model needs a history of at least 12");
        Refused(series[1] with { TimeFeatures = series[1].TimeFeatures![..10] }, "time_features has 10 values; expected (history 19 + horizon 6) x 2 = 50");
        Refused(series[1] with { StaticCategorical = [7] }, "static categorical feature 0 is 7; it must be in [0, 3)");
        Refused(series[1] with { StaticCategorical = null }, "0 static categorical features; the model has 1");
        Refused(series[1] with { Values = [.. series[1].Values[..^1], float.PositiveInfinity] }, "values must be finite");
        Refused(series[1] with { Values = [.. series[1].Values[..7], .. Enumerable.Repeat(float.NaN, 12)] }, "all missing");
        Refused(series[1], "horizon 7 must be in [1, 6]", new ForecastOptions { Horizon = 7 });
        Assert.Throws<ArgumentException>(() => f.Predict(series, new ForecastOptions { Quantiles = [1.5] }));
        Assert.Throws<InvalidDataException>(() => new Forecaster(Repo.Path("models", "gpt2-mini")));
    }

    /// <summary>
    /// A negative-binomial model on counts near 1e10: MathNet's integer samplers would overflow (and spin) at such
    /// means; the Gamma-Poisson draw in double with a normal approximation gives finite, non-negative whole counts.
    /// </summary>
    [Fact]
    public void NegativeBinomial_SamplesHugeCountsWithoutOverflow()
    {
        var cfg = new TimeSeriesConfig
        {
            ModelType = "time_series_transformer", PredictionLength = 3, ContextLength = 6, LagsSequence = [1, 2], DistributionOutput = "negative_binomial",
            NumTimeFeatures = 2, TimeFeatures = "monthly", DModel = 8, EncoderLayers = 1, DecoderLayers = 1, EncoderFfnDim = 8, DecoderFfnDim = 8,
        };
        var dir = Path.Combine(Repo.TempDir(), "nb");
        ModelKinds.WritePreset(dir, cfg, seed: 1);
        using var f = new Forecaster(dir);
        var history = Enumerable.Range(0, 12).Select(k => 1e10f + 1e8f * k).ToArray();
        var fc = f.Predict([new SeriesInput { Values = history, Start = new DateTime(2020, 1, 1) }], new ForecastOptions { Samples = 200, Seed = 2 })[0];
        Assert.All(fc.Samples.SelectMany(p => p), v => Assert.True(float.IsFinite(v) && v >= 0 && v == MathF.Round(v), $"sample {v}"));
        Assert.InRange(fc.Median.Average(), 1e8, 1e12);
        output.WriteLine($"negative binomial at 1e10: median {fc.Median.Average():E3}");
    }
}

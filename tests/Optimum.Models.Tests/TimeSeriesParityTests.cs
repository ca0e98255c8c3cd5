using Optimum.Hub;
using Optimum.Models;
using Optimum.Onnx;
using Optimum.Tests;
using Xunit;
using Xunit.Abstractions;
using Optimum.Core;

namespace Optimum.Models.Tests;

/// <summary>Informer and TimeSeriesTransformer against transformers (../shared/fixtures/hf/informer-tiny, tst-tiny).</summary>
public sealed class TimeSeriesParityTests(ITestOutputHelper output)
{
    private static readonly string[] Batch = ["past_values", "past_time_features", "past_observed_mask", "static_categorical_features", "static_real_features", "future_values", "future_time_features"];

    internal static (TimeSeriesConfig Config, IReadOnlyList<ParameterInfo> Ps, float[][] W, IReadOnlyDictionary<string, SafeTensor> E) Load(string fixture)
    {
        var dir = Repo.Fixture(fixture);
        var cfg = TimeSeriesConfig.FromHf(HfConfig.Load(Path.Combine(dir, "config.json")));
        var g = new GraphBuilder("probe");
        TimeSeriesModel.Define(g, false, cfg);
        var ps = g.Parameters.Select(p => new ParameterInfo(p.Name, p.Shape.ToStatic()) { Trainable = !g.IsBuffer(p) }).ToArray();
        var w = HfWeights.Load(Path.Combine(dir, "model.safetensors"), ps, out var unused);
        Assert.Empty(unused);
        return (cfg, ps, w, SafeTensorsFile.ReadAll(Path.Combine(dir, "expected.safetensors")));
    }

    internal static Dictionary<string, HostTensor> Feeds(IReadOnlyList<ParameterInfo> ps, float[][] w, IReadOnlyDictionary<string, SafeTensor> e, long seed = 0)
    {
        var f = ps.Select((p, i) => (p, i)).ToDictionary(x => x.p.Name, x => new HostTensor(w[x.i].Select(v => (double)v).ToArray(), x.p.Shape, DType.Float));
        foreach (var name in Batch.Where(e.ContainsKey))
            f[name] = e[name].Type == DType.Int64
                ? new HostTensor(e[name].ToInt64s().Select(v => (double)v).ToArray(), e[name].Shape, DType.Int64)
                : new HostTensor(e[name].ToFloats().Select(v => (double)v).ToArray(), e[name].Shape, DType.Float);
        var fv = e["future_values"];
        f["future_observed_mask"] = new HostTensor(Enumerable.Repeat(1.0, fv.ToFloats().Length).ToArray(), fv.Shape, DType.Float);
        f[GraphInputs.DropoutSeed] = new HostTensor([seed], [], DType.Int64);
        return f;
    }

    /// <summary>The training-mode forward with every output, plus the gradient of every trainable parameter.</summary>
    private static GraphBuilder TrainGraph(TimeSeriesConfig cfg, bool debugBatchNormInput = false)
    {
        var g = new GraphBuilder("train");
        var m = TimeSeriesModel.Define(g, true, cfg, debugBatchNormInput: debugBatchNormInput);
        TrainingGraph.AddGradientOutputs(g, m.Loss);
        foreach (var (k, v) in m.Outputs!) g.Output(v, k);
        foreach (var (k, v) in m.Updates!) g.Output(v, TrainingGraph.UpdatePrefix + k);
        return g;
    }

    private static Dictionary<string, HostTensor> Only(Dictionary<string, HostTensor> feeds, GraphBuilder g) =>
        feeds.Where(kv => g.Inputs.Any(i => i.Name == kv.Key)).ToDictionary();

    [Theory]
    [InlineData("informer-tiny")]
    [InlineData("tst-tiny")]
    public void TrainMode_MatchesLossDistributionScalingAndEveryGradient(string fixture)
    {
        var (cfg, ps, w, e) = Load(fixture);
        var g = TrainGraph(cfg);
        using var m = new OrtModel(g);
        var r = m.Run(Only(Feeds(ps, w, e), g));
        double lossRef = e["loss"].ToFloats()[0];
        Assert.True(Math.Abs(r["loss"][0] - lossRef) <= 1e-5 * Math.Abs(lossRef), $"{fixture} loss {r["loss"][0]} vs {lossRef}");
        double pMax = 0;
        for (int i = 0; i < cfg.ParameterCount; i++) pMax = Math.Max(pMax, Compare.Check($"train.params.{i}", r[$"params.{i}"], e[$"train.params.{i}"].ToFloats(), 1e-4, 0).MaxAbs);
        var (locA, _) = Compare.Check("train.loc", r["loc"], e["train.loc"].ToFloats(), 1e-4, 1e-6);
        var (scaleA, _) = Compare.Check("train.scale", r["scale"], e["train.scale"].ToFloats(), 1e-4, 1e-6);
        double gAbs = 0, gRel = 0;
        int n = 0;
        foreach (var p in ps.Where(p => p.Trainable))
        {
            var (a, rel) = Compare.Check("grad." + p.Name, r["grad." + p.Name], e["grad." + p.Name].ToFloats(), 1e-4, 1e-3);
            (gAbs, gRel, n) = (Math.Max(gAbs, a), Math.Max(gRel, rel), n + 1);
        }
        Assert.Equal(e.Keys.Count(k => k.StartsWith("grad.", StringComparison.Ordinal)), n);
        output.WriteLine($"PARITY {fixture} train: loss {r["loss"][0]:F7} vs {lossRef:F7}; params max_abs={pMax:E2}; loc {locA:E2} scale {scaleA:E2}; {n} gradients max_abs={gAbs:E2} max_rel={gRel:E2}");
    }

    [Fact]
    public void EvalMode_Tst_MatchesLossDistributionAndEncoderOutput()
    {
        var (cfg, ps, w, e) = Load("tst-tiny");
        var g = TrainingGraph.BuildEval("eval", (b, t) => TimeSeriesModel.Define(b, t, cfg));
        using var m = new OrtModel(g);
        output.WriteLine($"PARITY tst-tiny eval: {CheckEval(m.Run(Only(Feeds(ps, w, e), g)), e, cfg)}");
    }

    /// <summary>The eval graph's loss, distribution parameters and encoder output against the fixture's eval.* tensors.</summary>
    private static string CheckEval(Dictionary<string, double[]> r, IReadOnlyDictionary<string, SafeTensor> e, TimeSeriesConfig cfg)
    {
        double lossRef = e["eval.loss"].ToFloats()[0];
        Assert.True(Math.Abs(r["loss"][0] - lossRef) <= 1e-5 * Math.Abs(lossRef), $"eval loss {r["loss"][0]} vs {lossRef}");
        double pMax = 0;
        for (int i = 0; i < cfg.ParameterCount; i++) pMax = Math.Max(pMax, Compare.Check($"eval.params.{i}", r[$"params.{i}"], e[$"eval.params.{i}"].ToFloats(), 1e-4, 0).MaxAbs);
        var (encA, _) = Compare.Check("eval.encoder_last_hidden_state", r["encoder_last_hidden_state"], e["eval.encoder_last_hidden_state"].ToFloats(), 1e-4, 0);
        return $"loss {r["loss"][0]:F7} vs {lossRef:F7}; params max_abs={pMax:E2}; encoder output max_abs={encA:E2}";
    }

    /// <summary>
    /// Informer's eval graph differs from its training graph only in BatchNorm (running statistics instead of
    /// the batch's). The training graph's running-statistic updates must be torch's (momentum 0.1, unbiased
    /// variance); with the running statistics set to the batch's mean and biased variance, eval must reproduce
    /// the train-mode forward; and after one update from the train-mode forward (what transformers did before
    /// its eval pass) eval must match the fixture's eval loss, distribution parameters and encoder output.
    /// </summary>
    [Fact]
    public void EvalMode_Informer_MatchesAfterTheTrainModeBatchNormUpdate()
    {
        var (cfg, ps, w, e) = Load("informer-tiny");
        var train = TrainGraph(cfg);
        var bnInput = TrainGraph(cfg, debugBatchNormInput: true);
        Dictionary<string, double[]> tr, x;
        using (var t = new OrtModel(train)) tr = t.Run(Only(Feeds(ps, w, e), train));
        using (var t = new OrtModel(bnInput)) x = t.Run(Only(Feeds(ps, w, e), bnInput));
        // Batch statistics of the BatchNorm input (B, D, L) per channel.
        var bn = x[TimeSeriesModel.DebugBatchNormInput];
        long b = e["past_values"].Shape[0], d = cfg.DModel, l = bn.Length / (b * d);
        var mean = new double[d];
        var biased = new double[d];
        for (int ch = 0; ch < d; ch++)
        {
            var v = Enumerable.Range(0, (int)b).SelectMany(i => Enumerable.Range(0, (int)l).Select(k => bn[(i * d + ch) * l + k])).ToArray();
            mean[ch] = v.Average();
            biased[ch] = v.Select(z => (z - mean[ch]) * (z - mean[ch])).Average();
        }
        var stats = (float[][])w.Clone();
        double updA = 0;
        for (int i = 0; i < ps.Count; i++)
        {
            if (!tr.TryGetValue(TrainingGraph.UpdatePrefix + ps[i].Name, out var next)) continue;
            bool variance = ps[i].Name.EndsWith("running_var", StringComparison.Ordinal);
            var torch = Enumerable.Range(0, (int)d).Select(ch => (float)(0.9 * w[i][ch] + 0.1 * (variance ? biased[ch] * b * l / (b * l - 1) : mean[ch]))).ToArray();
            updA = Math.Max(updA, Compare.Check("update." + ps[i].Name, next, torch, 1e-6, 1e-5).MaxAbs);
            stats[i] = (variance ? biased : mean).Select(z => (float)z).ToArray();
        }
        Assert.True(updA > 0 || tr.Keys.Count(k => k.StartsWith(TrainingGraph.UpdatePrefix, StringComparison.Ordinal)) == 2);
        var g = TrainingGraph.BuildEval("eval", (bb, t) => TimeSeriesModel.Define(bb, t, cfg));
        using var m = new OrtModel(g);
        var r = m.Run(Only(Feeds(ps, stats, e), g));
        var (encA, _) = Compare.Check("encoder output, eval vs train", r["encoder_last_hidden_state"], tr["encoder_last_hidden_state"].Select(v => (float)v).ToArray(), 1e-4, 0);
        double pMax = 0;
        for (int i = 0; i < cfg.ParameterCount; i++) pMax = Math.Max(pMax, Compare.Check($"params.{i}, eval vs reference train", r[$"params.{i}"], e[$"train.params.{i}"].ToFloats(), 1e-4, 0).MaxAbs);
        Assert.True(Math.Abs(r["loss"][0] - e["loss"].ToFloats()[0]) <= 1e-5 * e["loss"].ToFloats()[0], $"loss {r["loss"][0]} vs {e["loss"].ToFloats()[0]}");

        // transformers ran the train-mode forward (one BatchNorm update) before its eval pass: so do we.
        var once = (float[][])w.Clone();
        for (int i = 0; i < ps.Count; i++)
            if (tr.TryGetValue(TrainingGraph.UpdatePrefix + ps[i].Name, out var next)) once[i] = next.Select(v => (float)v).ToArray();
        output.WriteLine($"PARITY informer-tiny eval (after the train-mode forward's BatchNorm update, as transformers ran it): {CheckEval(m.Run(Only(Feeds(ps, once, e), g)), e, cfg)}");
        output.WriteLine($"PARITY informer-tiny eval with batch statistics = train mode: encoder output max_abs={encA:E2}, params vs HF train max_abs={pMax:E2}; running-statistic updates vs torch's rule max_abs={updA:E2}");
    }
}

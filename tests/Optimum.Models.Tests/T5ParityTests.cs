using Optimum.Hub;
using Optimum.Models;
using Optimum.Onnx;
using Optimum.Tests;
using Xunit;
using Xunit.Abstractions;
using Optimum.Core;

namespace Optimum.Models.Tests;

/// <summary>T5 against transformers (../shared/fixtures/hf/t5-tiny).</summary>
public sealed class T5ParityTests(ITestOutputHelper output)
{
    private static readonly string Dir = Repo.Fixture("t5-tiny");

    private static (T5Config Config, IReadOnlyList<ParameterInfo> Ps, float[][] W, IReadOnlyDictionary<string, SafeTensor> E, GraphBuilder Train, GraphBuilder Eval) Load()
    {
        var cfg = T5Config.FromHf(HfConfig.Load(Path.Combine(Dir, "config.json")));
        var train = TrainingGraph.BuildTraining("t5", (g, t) => T5.DefineLm(g, t, cfg));
        var eval = TrainingGraph.BuildEval("t5", (g, t) => T5.DefineLm(g, t, cfg));
        var ps = train.Parameters.Select(p => new ParameterInfo(p.Name, p.Shape.ToStatic())).ToArray();
        var w = HfWeights.Load(Path.Combine(Dir, "model.safetensors"), ps, out var unused);
        Assert.Empty(unused);
        return (cfg, ps, w, SafeTensorsFile.ReadAll(Path.Combine(Dir, "expected.safetensors")), train, eval);
    }

    private static Dictionary<string, HostTensor> Feeds(IReadOnlyList<ParameterInfo> ps, float[][] w, IReadOnlyDictionary<string, SafeTensor> e)
    {
        var f = ps.Select((p, i) => (p, i)).ToDictionary(x => x.p.Name, x => new HostTensor(w[x.i].Select(v => (double)v).ToArray(), x.p.Shape, DType.Float));
        foreach (var name in new[] { "input_ids", "attention_mask", "labels" })
            f[name] = new HostTensor(e[name].ToInt64s().Select(v => (double)v).ToArray(), e[name].Shape, DType.Int64);
        return f;
    }

    [Fact]
    public void EvalGraph_MatchesLogitsEncoderOutputAndLoss()
    {
        var (_, ps, w, e, _, eval) = Load();
        using var m = new OrtModel(eval);
        var r = m.Run(Feeds(ps, w, e));
        var (la, lr) = Compare.Check("logits", r["logits"], e["logits"].ToFloats(), 1e-4, 0);
        var (ea, _) = Compare.Check("encoder_last_hidden_state", r["encoder_last_hidden_state"], e["encoder_last_hidden_state"].ToFloats(), 1e-4, 0);
        var lossRef = e["loss"].ToFloats()[0];
        Assert.True(Math.Abs(r["loss"][0] - lossRef) <= 1e-5 * lossRef, $"loss {r["loss"][0]} vs {lossRef}");
        output.WriteLine($"PARITY t5 logits max_abs={la:E2}; encoder output max_abs={ea:E2}; loss {r["loss"][0]:F7} vs {lossRef:F7}");
    }

    [Fact]
    public void TrainingGraph_MatchesEveryGradient()
    {
        var (_, ps, w, e, train, _) = Load();
        using var m = new OrtModel(train);
        var r = m.Run(Feeds(ps, w, e));
        double maxAbs = 0, maxRel = 0;
        foreach (var p in ps)
        {
            var (a, rel) = Compare.Check("grad." + p.Name, r["grad." + p.Name], e["grad." + p.Name].ToFloats(), 1e-4, 1e-3);
            maxAbs = Math.Max(maxAbs, a);
            maxRel = Math.Max(maxRel, rel);
        }
        Assert.Equal(ps.Count, e.Keys.Count(k => k.StartsWith("grad.", StringComparison.Ordinal)));
        output.WriteLine($"PARITY t5 gradients ({ps.Count} tensors) max_abs={maxAbs:E2} max_rel={maxRel:E2}");
    }
}

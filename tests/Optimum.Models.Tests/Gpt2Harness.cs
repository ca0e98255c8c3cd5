using Optimum.Hub;
using Optimum.Models;
using Optimum.Onnx;
using Optimum.Tests;
using Optimum.Core;

namespace Optimum.Models.Tests;

/// <summary>Builds GPT-2 graphs for a config and runs them through ORT with given weights.</summary>
internal sealed class Gpt2Harness : IDisposable
{
    public Gpt2Harness(Gpt2Config config, float[][]? weights = null, int seed = 0, DType type = DType.Float)
    {
        Config = config;
        Type = type;
        Training = TrainingGraph.BuildTraining("train", (g, t) => Gpt2.DefineLm(g, t, config, type));
        Eval = TrainingGraph.BuildEval("eval", (g, t) => Gpt2.DefineLm(g, t, config, type));
        Decoder = new GraphBuilder("decoder");
        Gpt2.DefineDecoder(Decoder, config, type);
        Parameters = Training.Parameters.Select(p => new ParameterInfo(p.Name, p.Shape.ToStatic())).ToArray();
        Weights = weights ?? ModelKinds.Initialize(Parameters, config, seed);
    }

    public Gpt2Config Config { get; }
    public DType Type { get; }
    public GraphBuilder Training { get; }
    public GraphBuilder Eval { get; }
    public GraphBuilder Decoder { get; }
    public IReadOnlyList<ParameterInfo> Parameters { get; }
    public float[][] Weights { get; }

    private OrtModel? _train, _eval, _decoder;
    public OrtModel TrainModel => _train ??= new OrtModel(Training);
    public OrtModel EvalModel => _eval ??= new OrtModel(Eval);
    public OrtModel DecoderModel => _decoder ??= new OrtModel(Decoder);

    public Dictionary<string, HostTensor> ParamFeeds(float[][]? weights = null) =>
        Parameters.Select((p, i) => (p, i)).ToDictionary(x => x.p.Name, x => new HostTensor((weights ?? Weights)[x.i].Select(f => (double)f).ToArray(), x.p.Shape, Type));

    public static HostTensor Ids(long[] values, params long[] dims) => new(values.Select(v => (double)v).ToArray(), dims, DType.Int64);

    /// <summary>Feeds of the LM graphs: attention mask of ones unless given, labels = input_ids unless given.</summary>
    public Dictionary<string, HostTensor> LmFeeds(long[] ids, int batch, long[]? mask = null, long[]? labels = null)
    {
        int t = ids.Length / batch;
        var f = ParamFeeds();
        f["input_ids"] = Ids(ids, batch, t);
        f["attention_mask"] = Ids(mask ?? Enumerable.Repeat(1L, ids.Length).ToArray(), batch, t);
        f["labels"] = Ids(labels ?? ids, batch, t);
        return f;
    }

    /// <summary>One decoder step; returns logits (batch, seq, vocab) and the new cache.</summary>
    public (double[] Logits, HostTensor[] Present) Step(long[] ids, int batch, long[] mask, long[] positions, HostTensor[]? past)
    {
        int seq = ids.Length / batch;
        var f = ParamFeeds();
        f["input_ids"] = Ids(ids, batch, seq);
        f["position_ids"] = Ids(positions, batch, seq);
        f["attention_mask"] = Ids(mask, batch, mask.Length / batch);
        for (int i = 0; i < 2 * Config.NLayer; i++)
            f[CacheName("past_key_values", i)] = past?[i] ?? new HostTensor([], [batch, Config.NHead, 0, Config.HeadSize], Type);
        var r = DecoderModel.Run(f);
        long pastLen = past is null ? 0 : past[0].Dims[2];
        var present = Enumerable.Range(0, 2 * Config.NLayer)
            .Select(i => new HostTensor(r[CacheName("present", i)], [batch, Config.NHead, pastLen + seq, Config.HeadSize], Type)).ToArray();
        return (r["logits"], present);
    }

    private static string CacheName(string prefix, int i) => $"{prefix}.{i / 2}.{(i % 2 == 0 ? "key" : "value")}";

    public void Dispose()
    {
        _train?.Dispose();
        _eval?.Dispose();
        _decoder?.Dispose();
    }
}

/// <summary>Elementwise comparison with the fixtures' tolerance rule |a - r| &lt;= atol + rtol |r|.</summary>
internal static class Compare
{
    public static (double MaxAbs, double MaxRel) Check(string what, IReadOnlyList<double> actual, IReadOnlyList<float> expected, double atol, double rtol)
    {
        if (actual.Count != expected.Count) throw new Xunit.Sdk.XunitException($"{what}: {actual.Count} values, expected {expected.Count}.");
        double maxAbs = 0, maxRel = 0;
        for (int i = 0; i < actual.Count; i++)
        {
            double err = Math.Abs(actual[i] - expected[i]);
            maxAbs = Math.Max(maxAbs, err);
            maxRel = Math.Max(maxRel, err / Math.Max(Math.Abs(expected[i]), 1e-6));
            if (!(err <= atol + rtol * Math.Abs(expected[i])))
                throw new Xunit.Sdk.XunitException($"{what}[{i}]: got {actual[i]}, expected {expected[i]} (|diff| {err:E3} > {atol} + {rtol}*|ref|).");
        }
        return (maxAbs, maxRel);
    }

    public static int ArgMax(ReadOnlySpan<double> row)
    {
        int best = 0;
        for (int k = 1; k < row.Length; k++) if (row[k] > row[best]) best = k;
        return best;
    }
}

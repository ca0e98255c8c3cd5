using Optimum.Hub;
using Optimum.Onnx;
using Optimum.Core;

namespace Optimum.Models;

/// <summary>Model folders for TimeSeriesTransformer and Informer: graphs and config, weights from a checkpoint or a seed.</summary>
public static class TimeSeriesArtifacts
{
    public const string EncoderFile = "encoder.onnx";
    public const string DecoderFile = "decoder.onnx";

    /// <summary>Writes config.json, training.onnx, eval.onnx, encoder.onnx and decoder.onnx (no weights).</summary>
    public static void Write(string dir, TimeSeriesConfig c)
    {
        var encoder = new GraphBuilder(c.ModelType + "_encoder");
        TimeSeriesModel.DefineEncoder(encoder, c);
        var decoder = new GraphBuilder(c.ModelType + "_decoder");
        TimeSeriesModel.DefineDecoder(decoder, c);
        Artifacts.Write(dir, c.ModelType, c.ToHf(), (g, training) => TimeSeriesModel.Define(g, training, c),
            [(EncoderFile, "encoder", encoder), (DecoderFile, "decoder", decoder)]);
    }

    /// <summary>An HF folder to a model folder (weights from model.safetensors, or initialised from the seed).</summary>
    public static IReadOnlyList<string> Export(string hfDir, string outDir, int seed = 0)
    {
        var cfg = TimeSeriesConfig.FromHf(HfConfig.Load(Path.Combine(hfDir, ModelFolder.ConfigFile)));
        Write(outDir, cfg);
        return Artifacts.WriteWeights(outDir, hfDir, ps => Initialize(ps, cfg, seed));
    }

    public static void WritePreset(string outDir, TimeSeriesConfig c, int seed = 0)
    {
        Write(outDir, c);
        Artifacts.WriteWeights(outDir, null, ps => Initialize(ps, c, seed));
    }

    /// <summary>
    /// HF's _init_weights: Linear, Conv1d and Embedding weights ~ N(0, init_std), biases 0, LayerNorm and
    /// BatchNorm weight 1 / bias 0, running mean 0 / variance 1, sinusoidal position tables (sin in the
    /// first half of each row, cos in the second). Deterministic in the seed and the parameter order.
    /// </summary>
    public static float[][] Initialize(IReadOnlyList<ParameterInfo> ps, TimeSeriesConfig c, int seed)
    {
        var rng = new Random(seed);
        return ps.Select(p =>
        {
            string n = p.Name;
            if (n.EndsWith("embed_positions.weight", StringComparison.Ordinal)) return Sinusoidal((int)p.Shape[0], (int)p.Shape[1]);
            if (n.EndsWith("running_var", StringComparison.Ordinal)) return Enumerable.Repeat(1f, (int)p.Count).ToArray();
            if (n.EndsWith("running_mean", StringComparison.Ordinal) || n.EndsWith(".bias", StringComparison.Ordinal)) return new float[p.Count];
            if (n.Contains("layernorm", StringComparison.Ordinal) || n.Contains("layer_norm", StringComparison.Ordinal) || n.Contains(".norm.", StringComparison.Ordinal))
                return Enumerable.Repeat(1f, (int)p.Count).ToArray();
            return HfWeights.Normal(rng, p.Count, c.InitStd);
        }).ToArray();
    }

    /// <summary>The sinusoidal table of HF's TimeSeriesSinusoidalPositionalEmbedding (float64 angles, as numpy computes them).</summary>
    public static float[] Sinusoidal(int positions, int dim)
    {
        var t = new float[positions * dim];
        int sentinel = dim % 2 == 0 ? dim / 2 : dim / 2 + 1;
        for (int pos = 0; pos < positions; pos++)
            for (int j = 0; j < dim; j++)
            {
                double angle = pos / Math.Pow(10000, 2 * (j / 2) / (double)dim);
                if (j % 2 == 0) t[pos * dim + j / 2] = (float)Math.Sin(angle);
                else t[pos * dim + sentinel + j / 2] = (float)Math.Cos(angle);
            }
        return t;
    }
}

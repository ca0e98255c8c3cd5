using Optimum.Hub;
using Optimum.Onnx;
using Optimum.Core;

namespace Optimum.Models;

/// <summary>Model folders for T5: graphs and config, weights from a checkpoint or a seed.</summary>
public static class T5Artifacts
{
    public const string EncoderFile = "encoder.onnx";
    public const string DecoderFile = "decoder.onnx";

    /// <summary>Writes config.json, training.onnx, eval.onnx, encoder.onnx and decoder.onnx (no weights).</summary>
    public static void Write(string dir, T5Config c)
    {
        var encoder = new GraphBuilder("t5_encoder");
        T5.DefineEncoder(encoder, c);
        var decoder = new GraphBuilder("t5_decoder");
        T5.DefineDecoder(decoder, c);
        Artifacts.Write(dir, "t5", c.ToHf(), (g, training) => T5.DefineLm(g, training, c), [(EncoderFile, "encoder", encoder), (DecoderFile, "decoder", decoder)]);
    }

    /// <summary>An HF T5 folder to a model folder (weights from model.safetensors, or initialised from the seed).</summary>
    public static IReadOnlyList<string> Export(string hfDir, string outDir, int seed = 0)
    {
        var cfg = T5Config.FromHf(HfConfig.Load(Path.Combine(hfDir, ModelFolder.ConfigFile)));
        Write(outDir, cfg);
        return Artifacts.WriteWeights(outDir, hfDir, ps => Initialize(ps, cfg, seed));
    }

    public static void WritePreset(string outDir, T5Config c, int seed = 0)
    {
        Write(outDir, c);
        Artifacts.WriteWeights(outDir, null, ps => Initialize(ps, c, seed));
    }

    /// <summary>HF's T5PreTrainedModel._init_weights, deterministic in the seed and parameter order.</summary>
    public static float[][] Initialize(IReadOnlyList<ParameterInfo> ps, T5Config c, int seed)
    {
        var rng = new Random(seed);
        double f = c.InitializerFactor;
        return ps.Select(p =>
        {
            string n = p.Name;
            if (n.EndsWith("layer_norm.weight", StringComparison.Ordinal)) return Enumerable.Repeat(1f, (int)p.Count).ToArray();
            double std = n switch
            {
                "shared.weight" or "lm_head.weight" => f,
                _ when n.EndsWith(".q.weight", StringComparison.Ordinal) => f * Math.Pow(c.DModel * c.DKv, -0.5),
                _ when n.EndsWith(".k.weight", StringComparison.Ordinal) || n.EndsWith(".v.weight", StringComparison.Ordinal) => f * Math.Pow(c.DModel, -0.5),
                _ when n.EndsWith(".o.weight", StringComparison.Ordinal) => f * Math.Pow(c.NumHeads * c.DKv, -0.5),
                _ when n.Contains("relative_attention_bias", StringComparison.Ordinal) => f * Math.Pow(c.DModel, -0.5),
                _ when n.EndsWith(".wo.weight", StringComparison.Ordinal) => f * Math.Pow(c.DFf, -0.5),
                _ => f * Math.Pow(c.DModel, -0.5),                                                  // wi, wi_0, wi_1
            };
            return HfWeights.Normal(rng, p.Count, std);
        }).ToArray();
    }
}

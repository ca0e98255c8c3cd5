using Optimum.Hub;
using Optimum.Onnx;
using Optimum.Core;

namespace Optimum.Models;

/// <summary>Artifact folders for GPT-2: graphs and config, weights from a checkpoint or from a seed, and HF exports.</summary>
public static class Gpt2Artifacts
{
    /// <summary>The bundled small config: 4 layers, 4 heads, width 128, 256 positions, GPT-2's BPE vocabulary.</summary>
    public static Gpt2Config Mini { get; } = new()
    {
        VocabSize = 50257, NPositions = 256, NEmbd = 128, NLayer = 4, NHead = 4,
        EmbdPdrop = 0.1, AttnPdrop = 0.1, ResidPdrop = 0.1,
    };

    /// <summary>Writes config.json, training.onnx, eval.onnx and inference.onnx for <paramref name="c"/> (no weights).</summary>
    public static void Write(string dir, Gpt2Config c)
    {
        var decoder = new GraphBuilder("gpt2_decoder");
        Gpt2.DefineDecoder(decoder, c);
        Artifacts.Write(dir, "gpt2", c.ToHf(), (g, training) => Gpt2.DefineLm(g, training, c), [(Artifacts.InferenceFile, "inference", decoder)]);
    }

    /// <summary>
    /// <c>optimum-net export</c>: an HF GPT-2 folder (config.json, model.safetensors) to an artifact
    /// folder with the graphs and the weights (HF names, F32). Without model.safetensors in the source,
    /// weights are initialised from <paramref name="seed"/>. Returns checkpoint tensors that were not used.
    /// </summary>
    public static IReadOnlyList<string> Export(string hfDir, string outDir, int seed = 0)
    {
        var cfg = Gpt2Config.FromHf(HfConfig.Load(Path.Combine(hfDir, Artifacts.ConfigFile)));
        Write(outDir, cfg);
        return Artifacts.WriteWeights(outDir, hfDir, ps => Gpt2Init.Initialize(ps, cfg, seed));
    }

    /// <summary>Writes a preset's artifacts with weights initialised from <paramref name="seed"/>.</summary>
    public static void WritePreset(string outDir, Gpt2Config c, int seed = 0)
    {
        Write(outDir, c);
        Artifacts.WriteWeights(outDir, null, ps => Gpt2Init.Initialize(ps, c, seed));
    }

    /// <summary>
    /// Writes an HF folder that <c>GPT2LMHeadModel.from_pretrained</c> loads: config.json (HF keys only)
    /// and model.safetensors (F32, HF names; a tied lm_head is not stored, as HF saves it).
    /// </summary>
    public static void ExportHf(string outDir, Gpt2Config c, IReadOnlyList<ParameterInfo> parameters, IReadOnlyList<float[]> weights)
    {
        Directory.CreateDirectory(outDir);
        HfWeights.Save(Path.Combine(outDir, Artifacts.WeightsFile), parameters, weights);
        var json = c.ToHf();
        json["architectures"] = new System.Text.Json.Nodes.JsonArray("GPT2LMHeadModel");
        AtomicFile.Write(Path.Combine(outDir, Artifacts.ConfigFile), System.Text.Encoding.UTF8.GetBytes(json.ToJsonString(new System.Text.Json.JsonSerializerOptions { WriteIndented = true }) + "\n"));
    }
}

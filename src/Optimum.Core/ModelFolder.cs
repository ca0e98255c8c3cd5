using System.Text.Json;
using System.Text.Json.Nodes;

namespace Optimum.Core;

/// <summary>A parameter as listed in a model folder's config.json: HF name, static shape, and whether it is trained (buffers are not).</summary>
public sealed record ParameterInfo(string Name, long[] Shape)
{
    /// <summary>False for buffers (BatchNorm running statistics, fixed tables): stored and checkpointed, never stepped by the optimizer.</summary>
    public bool Trainable { get; init; } = true;

    public long Count => Shape.Aggregate(1L, (a, b) => a * b);
}

/// <summary>
/// The layout of a model (artifact) folder, see DESIGN.md: <c>config.json</c> (the HF config plus an
/// <c>optimum</c> section: versions, parameter order, graph signatures), <c>training.onnx</c>,
/// <c>eval.onnx</c>, <c>inference.onnx</c> and <c>model.safetensors</c> (HF names).
/// </summary>
public static class ModelFolder
{
    public const string ConfigFile = "config.json";
    public const string TrainingFile = "training.onnx";
    public const string EvalFile = "eval.onnx";
    public const string InferenceFile = "inference.onnx";
    /// <summary>Encoder-decoder kinds: the encoder (once per input) and the decoder (once per step).</summary>
    public const string EncoderFile = "encoder.onnx";
    public const string DecoderFile = "decoder.onnx";
    public const string WeightsFile = "model.safetensors";

    /// <summary>The folder's config.json; a missing file names the folder.</summary>
    public static HfConfig ReadConfig(string dir)
    {
        var path = Path.Combine(dir, ConfigFile);
        if (!File.Exists(path)) throw new FileNotFoundException($"Model folder '{dir}' has no {ConfigFile}.", path);
        return HfConfig.Load(path);
    }

    /// <summary>The parameters in graph order, refusing a missing or malformed config with its path.</summary>
    public static IReadOnlyList<ParameterInfo> ReadParameters(string dir)
    {
        var c = ReadConfig(dir);
        try
        {
            var ps = c.Json["optimum"]?["parameters"]?.AsArray() ?? throw new InvalidDataException("missing optimum.parameters");
            return ps.Select(p => new ParameterInfo(
                p!["name"]!.GetValue<string>(),
                p["shape"]!.AsArray().Select(d => d!.GetValue<long>()).ToArray())
            { Trainable = p["trainable"]?.GetValue<bool>() ?? true }).ToArray();
        }
        catch (Exception e) when (e is JsonException or InvalidDataException or InvalidOperationException or NullReferenceException)
        {
            throw new InvalidDataException($"'{c.Source}' is not a valid model folder config: {e.Message}", e);
        }
    }

    /// <summary>Data inputs (not parameters) of one graph signature ("training", "eval", "inference"): name, type and shape as written.</summary>
    public static IReadOnlyList<(string Name, string Type, string[] Shape)> ReadInputs(string dir, string graph)
    {
        var c = ReadConfig(dir);
        var inputs = c.Json["optimum"]?[graph]?["inputs"]?.AsArray()
            ?? throw new InvalidDataException($"'{c.Source}' has no optimum.{graph}.inputs.");
        return inputs.Select(i => (
            i!["name"]!.GetValue<string>(),
            i["type"]!.GetValue<string>(),
            i["shape"]!.AsArray().Select(d => d!.ToString()).ToArray())).ToArray();
    }
}

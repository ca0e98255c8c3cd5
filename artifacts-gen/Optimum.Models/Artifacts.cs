using System.Text.Json;

namespace Optimum.Models;

/// <summary>
/// One model's artifact folder (see DESIGN.md): <c>config.json</c> (the model config plus an
/// <c>optimum</c> section with versions, parameter order and graph signatures), <c>training.onnx</c>
/// and <c>eval.onnx</c>. Writing is deterministic: same definition, same bytes.
/// </summary>
public static class Artifacts
{
    public const string ConfigFile = ModelFolder.ConfigFile;
    public const string TrainingFile = ModelFolder.TrainingFile;
    public const string EvalFile = ModelFolder.EvalFile;
    public const string InferenceFile = ModelFolder.InferenceFile;
    public const string WeightsFile = ModelFolder.WeightsFile;

    /// <summary>
    /// Writes model.safetensors into a model folder whose graphs are written: the weights of
    /// <paramref name="hfDir"/>/model.safetensors when there is one (by HF name, shapes checked), else
    /// <paramref name="initialize"/>'s. Returns checkpoint tensors that were not used.
    /// </summary>
    public static IReadOnlyList<string> WriteWeights(string outDir, string? hfDir, Func<IReadOnlyList<ParameterInfo>, float[][]> initialize)
    {
        var ps = ReadParameters(outDir);
        var src = hfDir is null ? null : Path.Combine(hfDir, WeightsFile);
        IReadOnlyList<string> unused = [];
        var weights = src is not null && File.Exists(src) ? HfWeights.Load(src, ps, out unused) : initialize(ps);
        HfWeights.Save(Path.Combine(outDir, WeightsFile), ps, weights);
        return unused;
    }

    /// <summary>Reads the parameter list of an artifact folder (see <see cref="ModelFolder.ReadParameters"/>).</summary>
    public static IReadOnlyList<ParameterInfo> ReadParameters(string dir) => ModelFolder.ReadParameters(dir);

    /// <summary>Builds the training and eval graphs from <paramref name="define"/> and writes the folder (each file atomically).</summary>
    public static void Write(string dir, string modelType, JsonObject config, Func<GraphBuilder, bool, ModelOutputs> define) =>
        Write(dir, modelType, config, define, []);

    /// <summary>
    /// As <see cref="Write(string, string, JsonObject, Func{GraphBuilder, bool, ModelOutputs})"/>, plus
    /// more graphs (e.g. the inference decoder) as (file name, signature key, graph).
    /// </summary>
    public static void Write(string dir, string modelType, JsonObject config, Func<GraphBuilder, bool, ModelOutputs> define,
        IReadOnlyList<(string File, string Key, GraphBuilder Graph)> extra)
    {
        var train = TrainingGraph.BuildTraining(modelType + "_training", define);
        var eval = TrainingGraph.BuildEval(modelType + "_eval", define);
        var cfg = (JsonObject)config.DeepClone();
        cfg["model_type"] = modelType;
        var optimum = new JsonObject
        {
            ["ir_version"] = OnnxVersions.IrVersion,
            ["opset"] = train.Opset,
            ["parameters"] = new JsonArray(train.Parameters.Select(p =>
            {
                var o = new JsonObject
                {
                    ["name"] = p.Name,
                    ["shape"] = new JsonArray(p.Shape.Select(d => (JsonNode)d.Value).ToArray()),
                };
                if (train.IsBuffer(p)) o["trainable"] = false;
                return (JsonNode)o;
            }).ToArray()),
            ["training"] = Signature(train),
            ["eval"] = Signature(eval),
        };
        foreach (var (_, key, graph) in extra) optimum[key] = Signature(graph);
        cfg["optimum"] = optimum;
        Directory.CreateDirectory(dir);
        AtomicFile.Write(Path.Combine(dir, ConfigFile), System.Text.Encoding.UTF8.GetBytes(cfg.ToJsonString(new JsonSerializerOptions { WriteIndented = true }) + "\n"));
        ModelWriter.Save(train, Path.Combine(dir, TrainingFile));
        ModelWriter.Save(eval, Path.Combine(dir, EvalFile));
        foreach (var (file, _, graph) in extra) ModelWriter.Save(graph, Path.Combine(dir, file));
    }

    private static JsonObject Signature(GraphBuilder g)
    {
        static JsonNode Io(Value v) => new JsonObject
        {
            ["name"] = v.Name,
            ["type"] = v.Type.Name(),
            ["shape"] = new JsonArray(v.Shape.Select(d => d.IsStatic ? (JsonNode)d.Value : d.ToString()).ToArray()),
        };
        return new JsonObject
        {
            ["inputs"] = new JsonArray(g.Inputs.Where(i => i.Kind == ValueKind.Input).Select(Io).ToArray()),
            ["outputs"] = new JsonArray(g.Outputs.Select(Io).ToArray()),
        };
    }
}

using System.Text.Json;
using System.Text.Json.Nodes;
using Google.Protobuf;
using Optimum.Core;
using Optimum.Hub;
using Optimum.Onnx.Proto;

namespace Optimum.Inference.Quantization;

/// <summary>The precision of a model folder's matrix weights ("fp32", "int8", "int4" on the wire).</summary>
public enum WeightPrecision { Fp32, Int8, Int4 }

/// <summary>The ONNX Runtime operator an int8 folder multiplies with.</summary>
public enum Int8Operator
{
    /// <summary><c>com.microsoft.MatMulNBits</c> with bits = 8, block-wise scales (as int4).</summary>
    MatMulNBits,
    /// <summary><c>com.microsoft.DynamicQuantizeMatMul</c>: per-column int8 weights, activations quantized per run.</summary>
    DynamicQuantizeMatMul,
}

/// <summary>What <see cref="ModelQuantizer.Quantize(string, string, QuantizeOptions)"/> makes.</summary>
public sealed record QuantizeOptions
{
    public WeightPrecision Weights { get; init; } = WeightPrecision.Int4;
    /// <summary>Weights per scale along K (MatMulNBits); a power of two >= 16.</summary>
    public int BlockSize { get; init; } = 32;
    /// <summary>A zero point per block (asymmetric: the block's [min, max] range) rather than symmetric around 0.</summary>
    public bool ZeroPoints { get; init; } = true;
    /// <summary>MatMulNBits' accuracy_level: 0 computes in float32 (dequantized weights); 4 quantizes the activations to int8 per block.</summary>
    public int AccuracyLevel { get; init; } = 4;
    /// <summary>
    /// Int8 only: which operator (see <see cref="Quantization.Int8Operator"/>). DynamicQuantizeMatMul by default: on GPT-2 124M
    /// (2 threads, AVX-512 VNNI) it generated 24.4 tokens/s against MatMulNBits' 20.1 in the same run, at the same perplexity.
    /// </summary>
    public Int8Operator Int8Operator { get; init; } = Int8Operator.DynamicQuantizeMatMul;
    /// <summary>
    /// Int8 with DynamicQuantizeMatMul only: weight codes in [-63, 63] (scale = max|w| / 63) rather than [-127, 127], so that
    /// ONNX Runtime's uint8 × int8 kernels on x86 CPUs without VNNI cannot saturate their int16 pair sums. Costs one bit of weight precision.
    /// </summary>
    public bool ReduceRange { get; init; }
    /// <summary>Replace an existing non-empty output folder entirely (nothing of it remains); otherwise such a folder is refused.</summary>
    public bool Overwrite { get; init; }

    /// <summary>True when the weights are int8 per column for DynamicQuantizeMatMul (no blocks, no zero points).</summary>
    public bool PerColumn => Weights == WeightPrecision.Int8 && Int8Operator == Int8Operator.DynamicQuantizeMatMul;

    /// <summary>In words, for messages: "int4, block 32, zero points".</summary>
    public string Describe() => PerColumn ? $"int8 per column, symmetric{(ReduceRange ? ", reduced range [-63, 63]" : "")}, DynamicQuantizeMatMul"
        : $"{Weights.Wire()}, block {BlockSize}, {(ZeroPoints ? "zero points" : "symmetric")}, MatMulNBits";

    public int Bits => Weights switch
    {
        WeightPrecision.Int8 => 8,
        WeightPrecision.Int4 => 4,
        _ => throw new ArgumentOutOfRangeException(nameof(Weights), Weights, "fp32 is not a quantized precision."),
    };
}

/// <summary>
/// Weight-only quantization of a model folder, for any model kind: every inference graph's matrix weights
/// (see <see cref="GraphQuantizer"/>) become ONNX Runtime quantized operators with the quantized weights as the
/// graph's initializers. The new folder holds config.json (optimum.parameters lists only the parameters still in
/// float32, optimum.quantization says how the rest were quantized), the rewritten inference graphs, model.safetensors
/// with the float32 parameters, and the source folder's other files; not the training graphs, whose parameters
/// it no longer has. It loads as any model folder does.
/// </summary>
public static class ModelQuantizer
{
    /// <summary>The graphs a kind's loader opens for inference.</summary>
    public static readonly string[] InferenceGraphs = [ModelFolder.InferenceFile, ModelFolder.EncoderFile, ModelFolder.DecoderFile];
    private static readonly string[] NotCopied = [ModelFolder.ConfigFile, ModelFolder.WeightsFile, ModelFolder.TrainingFile, ModelFolder.EvalFile, .. InferenceGraphs];

    /// <summary>Quantizes the folder <paramref name="modelDir"/> with its model.safetensors into <paramref name="outDir"/> (written whole or not at all).</summary>
    public static void Quantize(string modelDir, string outDir, QuantizeOptions options)
    {
        Validate(options);
        if (!Directory.Exists(modelDir)) throw new DirectoryNotFoundException($"Model folder '{modelDir}' does not exist.");
        CheckOutput(modelDir, outDir, options.Overwrite);
        var ps = ModelFolder.ReadParameters(modelDir);
        var path = Path.Combine(modelDir, ModelFolder.WeightsFile);
        if (!File.Exists(path)) throw new FileNotFoundException($"Model folder '{modelDir}' has no {ModelFolder.WeightsFile} (train or import weights first).", path);
        Quantize(modelDir, HfWeights.Load(path, ps, out _), outDir, options);
    }

    /// <summary>As <see cref="Quantize(string, string, QuantizeOptions)"/> with the weights given (in optimum.parameters order).</summary>
    public static void Quantize(string modelDir, IReadOnlyList<float[]> weights, string outDir, QuantizeOptions options)
    {
        Validate(options);
        if (!Directory.Exists(modelDir)) throw new DirectoryNotFoundException($"Model folder '{modelDir}' does not exist.");
        CheckOutput(modelDir, outDir, options.Overwrite);
        var config = ModelFolder.ReadConfig(modelDir);
        if (PrecisionOf(config) != WeightPrecision.Fp32) throw new InvalidDataException($"'{modelDir}' is already quantized ({PrecisionOf(config).Wire()}); quantize its float32 source instead.");
        var ps = ModelFolder.ReadParameters(modelDir);
        if (weights.Count != ps.Count) throw new ArgumentException($"{weights.Count} weight arrays for the {ps.Count} parameters of '{modelDir}'.", nameof(weights));
        var byName = ps.Select((p, i) => (p, i)).ToDictionary(x => x.p.Name, x => (x.p, weights[x.i]), StringComparer.Ordinal);
        var graphs = InferenceGraphs.Where(f => File.Exists(Path.Combine(modelDir, f))).ToArray();
        if (graphs.Length == 0) throw new FileNotFoundException($"Model folder '{modelDir}' has no inference graph ({string.Join(", ", InferenceGraphs)}).");

        var rewritten = new List<(string File, ModelProto Model)>();
        var quantized = new HashSet<string>(StringComparer.Ordinal);
        var stillRead = new HashSet<string>(StringComparer.Ordinal);
        foreach (var f in graphs)
        {
            var source = Path.Combine(modelDir, f);
            ModelProto model;
            try { model = ModelProto.Parser.ParseFrom(File.ReadAllBytes(source)); }
            catch (InvalidProtocolBufferException e) { throw new InvalidDataException($"'{source}' is not a readable ONNX model: {e.Message}", e); }
            quantized.UnionWith(GraphQuantizer.Rewrite(model, byName, options, source));
            stillRead.UnionWith(model.Graph.Input.Select(i => i.Name));
            rewritten.Add((f, model));
        }
        if (quantized.Count == 0) throw new InvalidDataException($"'{modelDir}': no MatMul or Gemm in {string.Join(", ", graphs)} multiplies by a parameter matrix; nothing to quantize.");
        // A parameter quantized in one graph but read as float by another (a T5 encoder's and decoder's shared embedding) stays listed.
        var keep = ps.Select((p, i) => (p, i)).Where(x => !quantized.Contains(x.p.Name) || stillRead.Contains(x.p.Name)).ToArray();

        var json = (JsonObject)config.Json.DeepClone();
        var optimum = json["optimum"]!.AsObject();
        var listed = optimum["parameters"]!.AsArray();
        optimum["parameters"] = new JsonArray(listed.Where(p => keep.Any(k => k.p.Name == p!["name"]!.GetValue<string>())).Select(p => p!.DeepClone()).ToArray());
        optimum.Remove("training");
        optimum.Remove("eval");
        optimum["quantization"] = new JsonObject
        {
            ["weights"] = options.Weights.Wire(),
            ["bits"] = options.Bits,
            ["operator"] = options.PerColumn ? "com.microsoft.DynamicQuantizeMatMul" : "com.microsoft.MatMulNBits",
            ["block_size"] = options.PerColumn ? null : options.BlockSize,
            ["zero_points"] = options.ZeroPoints && !options.PerColumn,
            ["accuracy_level"] = options.AccuracyLevel,
            ["reduce_range"] = options.ReduceRange,
            ["quantized"] = new JsonArray(ps.Where(p => quantized.Contains(p.Name)).Select(p => (JsonNode)p.Name).ToArray()),
        };

        AtomicFolder.Replace(outDir, tmp =>
        {
            foreach (var f in Directory.GetFiles(modelDir))
                if (!NotCopied.Contains(Path.GetFileName(f))) File.Copy(f, Path.Combine(tmp, Path.GetFileName(f)));
            foreach (var (f, model) in rewritten) File.WriteAllBytes(Path.Combine(tmp, f), model.ToByteArray());
            HfWeights.Save(Path.Combine(tmp, ModelFolder.WeightsFile), keep.Select(k => k.p).ToArray(), keep.Select(k => weights[k.i]).ToArray());
            File.WriteAllText(Path.Combine(tmp, ModelFolder.ConfigFile), json.ToJsonString(new JsonSerializerOptions { WriteIndented = true }) + "\n");
        });
    }

    /// <summary>
    /// Refuses an output folder that is, holds or lies inside the model folder (replacing it would destroy the source), and
    /// an existing non-empty one unless <paramref name="overwrite"/>: the quantized folder replaces it whole, never merges into it.
    /// </summary>
    public static void CheckOutput(string modelDir, string outDir, bool overwrite)
    {
        static string Full(string d) => Path.TrimEndingDirectorySeparator(Path.GetFullPath(d));
        static bool Within(string inner, string outer) => inner == outer || inner.StartsWith(outer + Path.DirectorySeparatorChar, StringComparison.Ordinal);
        string src = Full(modelDir), dst = Full(outDir);
        if (Within(dst, src))
            throw new ArgumentException($"Output folder '{outDir}' is {(dst == src ? "the model folder" : "inside the model folder")} '{modelDir}'; write the quantized model to another folder.");
        if (Within(src, dst))
            throw new ArgumentException($"Output folder '{outDir}' contains the model folder '{modelDir}'; replacing it would delete the source model.");
        if (Directory.Exists(dst) && Directory.EnumerateFileSystemEntries(dst).Any() && !overwrite)
            throw new IOException($"Output folder '{outDir}' exists and is not empty; pass --overwrite (QuantizeOptions.Overwrite) to replace it entirely.");
    }

    /// <summary>
    /// True on an x86 CPU without VNNI, where ONNX Runtime's uint8 × int8 kernels sum pairs of products in int16 (vpmaddubsw)
    /// and full-range int8 weights can saturate: see <see cref="QuantizeOptions.ReduceRange"/>. .NET 10 exposes AVX-VNNI and
    /// AVX10 (which includes AVX-512 VNNI) but not AVX-512 VNNI alone (Cascade Lake, Ice Lake), so Linux's cpuinfo flags are read too.
    /// </summary>
    public static bool X86WithoutVnni => System.Runtime.Intrinsics.X86.X86Base.IsSupported && !HasVnni.Value;

    private static readonly Lazy<bool> HasVnni = new(() =>
        System.Runtime.Intrinsics.X86.AvxVnni.IsSupported || System.Runtime.Intrinsics.X86.Avx10v1.IsSupported
        || (OperatingSystem.IsLinux() && File.Exists("/proc/cpuinfo")
            && File.ReadLines("/proc/cpuinfo").Any(l => l.StartsWith("flags", StringComparison.Ordinal) && l.Split(' ').Contains("avx512_vnni"))));

    /// <summary>Refuses options no quantized folder can have, before any file is read.</summary>
    public static void Validate(QuantizeOptions options)
    {
        if (options.Weights == WeightPrecision.Fp32) throw new ArgumentException("--weights must be int8 or int4 (fp32 is the unquantized folder).", nameof(options));
        BlockQuantizer.CheckBlockSize(options.BlockSize);
        if (options.AccuracyLevel is < 0 or > 4) throw new ArgumentOutOfRangeException(nameof(options), options.AccuracyLevel, "MatMulNBits' accuracy_level is 0 to 4.");
        if (options.ReduceRange && !options.PerColumn)
            throw new ArgumentException($"--reduce-range applies to int8 with DynamicQuantizeMatMul; got {options.Describe()}.", nameof(options));
    }

    /// <summary>The precision a folder's config.json records (fp32 without an optimum.quantization section).</summary>
    public static WeightPrecision PrecisionOf(HfConfig config)
    {
        var w = config.Json["optimum"]?["quantization"]?["weights"]?.GetValue<string>();
        return w is null ? WeightPrecision.Fp32 : Parse(w, $"{config.Source}: optimum.quantization.weights");
    }

    public static WeightPrecision PrecisionOf(string modelDir) => PrecisionOf(ModelFolder.ReadConfig(modelDir));

    /// <summary>"fp32", "int8" or "int4".</summary>
    public static string Wire(this WeightPrecision p) => p.ToString().ToLowerInvariant();

    /// <summary>Parses "fp32", "int8" or "int4"; anything else names <paramref name="what"/> and the value.</summary>
    public static WeightPrecision Parse(string s, string what = "precision") => s.Trim().ToLowerInvariant() switch
    {
        "fp32" or "float32" => WeightPrecision.Fp32,
        "int8" => WeightPrecision.Int8,
        "int4" => WeightPrecision.Int4,
        _ => throw new ArgumentException($"{what}: '{s}' is not a supported precision (fp32, int8, int4)."),
    };
}

using System.Security.Cryptography;
using System.Text.Json;
using System.Text.Json.Serialization;
using Optimum.Hub;
using Optimum.Onnx;

namespace Optimum.Training;

/// <summary>Everything besides tensors that a resume needs, saved as trainer_state.json.</summary>
public sealed record TrainerState
{
    public const string CurrentFormat = "optimum-net-checkpoint/1";
    public string Format { get; init; } = CurrentFormat;
    /// <summary>Optimizer updates applied so far.</summary>
    public long Step { get; init; }
    /// <summary>Training samples consumed so far (the data position).</summary>
    public long SamplesSeen { get; init; }
    public long SkippedSteps { get; init; }
    public int Seed { get; init; }
    public long TotalSteps { get; init; }
    public int BatchSize { get; init; }
    public int GradAccum { get; init; }
    public int WorldSize { get; init; } = 1;
    public string Optimizer { get; init; } = "";
    public string Schedule { get; init; } = "";
    public double Lr { get; init; }
    public long Warmup { get; init; }
    /// <summary>SHA-256 of every other file of the checkpoint, checked on load.</summary>
    public SortedDictionary<string, string> Files { get; init; } = new(StringComparer.Ordinal);
}

/// <summary>
/// Checkpoint folders <c>checkpoint-NNNNNNN</c>: model.safetensors (parameters, HF names),
/// optimizer.safetensors (state per parameter, PyTorch names: exp_avg.&lt;param&gt;, ...) and
/// trainer_state.json (with checksums of the others). A checkpoint is written into a temporary folder
/// that is renamed into place, so a crash never leaves a half-written one; only the last K are kept.
/// </summary>
public static class Checkpoints
{
    public const string StateFile = "trainer_state.json";
    public const string OptimizerFile = "optimizer.safetensors";
    private const string Prefix = "checkpoint-";

    internal static readonly JsonSerializerOptions Json = new()
    {
        PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower,
        WriteIndented = true,
        DefaultIgnoreCondition = JsonIgnoreCondition.Never,
    };

    /// <summary>Writes checkpoint <paramref name="state"/>.Step under <paramref name="root"/>, prunes to the last <paramref name="keep"/>, returns its folder.</summary>
    public static string Save(string root, ParameterStore store, Optimizer optimizer, TrainerState state, int keep)
    {
        Directory.CreateDirectory(root);
        var final = Path.Combine(root, $"{Prefix}{state.Step:D7}");
        var tmp = Path.Combine(root, $".{Prefix}{state.Step:D7}.tmp-{Environment.ProcessId}");
        if (Directory.Exists(tmp)) Directory.Delete(tmp, true);
        Directory.CreateDirectory(tmp);
        try
        {
            HfWeights.Save(Path.Combine(tmp, ModelFolder.WeightsFile), store.Parameters, store.Export());
            SafeTensorsFile.Write(Path.Combine(tmp, OptimizerFile), OptimizerTensors(store, optimizer),
                new Dictionary<string, string> { ["optimizer"] = optimizer.Config.Kind });
            var files = new SortedDictionary<string, string>(StringComparer.Ordinal)
            {
                [ModelFolder.WeightsFile] = Sha256(Path.Combine(tmp, ModelFolder.WeightsFile)),
                [OptimizerFile] = Sha256(Path.Combine(tmp, OptimizerFile)),
            };
            var json = JsonSerializer.SerializeToUtf8Bytes(state with { Files = files }, Json);
            AtomicFile.Write(Path.Combine(tmp, StateFile), json);
            if (Directory.Exists(final)) Directory.Delete(final, true);
            Directory.Move(tmp, final);
        }
        catch
        {
            if (Directory.Exists(tmp)) Directory.Delete(tmp, true);
            throw;
        }
        foreach (var old in List(root).SkipLast(Math.Max(1, keep))) Directory.Delete(old, true);
        return final;
    }

    /// <summary>Checkpoint folders under <paramref name="root"/>, oldest first.</summary>
    public static IReadOnlyList<string> List(string root) => !Directory.Exists(root) ? []
        : Directory.GetDirectories(root, Prefix + "*").Where(d => long.TryParse(Path.GetFileName(d)[Prefix.Length..], out _))
            .OrderBy(d => long.Parse(Path.GetFileName(d)[Prefix.Length..])).ToArray();

    /// <summary>The newest checkpoint under <paramref name="root"/>, or null.</summary>
    public static string? Latest(string root) => List(root).LastOrDefault();

    private static IEnumerable<SafeTensor> OptimizerTensors(ParameterStore store, Optimizer opt)
    {
        foreach (var (i, b, e) in store.Segments(opt.Begin, opt.End))
        {
            var p = store.Parameters[i];
            if (b != store.Offset(i) || e != store.Offset(i) + p.Count)
                throw new InvalidOperationException($"Optimizer slice [{opt.Begin}, {opt.End}) holds part of '{p.Name}'; save sharded state per rank.");
            for (int k = 0; k < opt.StateNames.Count; k++)
                yield return SafeTensor.FromFloats($"{opt.StateNames[k]}.{p.Name}", opt.State(k).Slice((int)(b - opt.Begin), (int)(e - b)), p.Shape);
        }
    }

    /// <summary>
    /// Reads and verifies a checkpoint into <paramref name="store"/> and <paramref name="optimizer"/>:
    /// a missing file, a checksum that differs (corruption), a truncated safetensors file, a missing
    /// tensor or a shape that differs is refused naming the file and the tensor.
    /// </summary>
    public static TrainerState Load(string dir, ParameterStore store, Optimizer optimizer)
    {
        var state = ReadState(dir);
        foreach (var (file, hash) in state.Files)
        {
            var path = Path.Combine(dir, file);
            if (!File.Exists(path)) throw new InvalidDataException($"Checkpoint '{dir}' lacks {file}.");
            if (Sha256(path) != hash) throw new InvalidDataException($"Checkpoint file '{path}' is corrupted: its SHA-256 differs from the one in {StateFile}.");
        }
        if (!state.Files.ContainsKey(ModelFolder.WeightsFile) || !state.Files.ContainsKey(OptimizerFile))
            throw new InvalidDataException($"'{Path.Combine(dir, StateFile)}': files must list {ModelFolder.WeightsFile} and {OptimizerFile}.");
        store.Load(HfWeights.Load(Path.Combine(dir, ModelFolder.WeightsFile), store.Parameters, out var unused));
        if (unused.Count > 0)
            throw new InvalidDataException($"Checkpoint '{Path.Combine(dir, ModelFolder.WeightsFile)}' has tensors the model lacks: {string.Join(", ", unused)}.");
        var optPath = Path.Combine(dir, OptimizerFile);
        using var f = SafeTensorsFile.Open(optPath);
        if (f.Metadata.TryGetValue("optimizer", out var kind) && kind != optimizer.Config.Kind)
            throw new InvalidDataException($"'{optPath}' holds {kind} state but the run uses {optimizer.Config.Kind}.");
        foreach (var (i, b, e) in store.Segments(optimizer.Begin, optimizer.End))
        {
            var p = store.Parameters[i];
            for (int k = 0; k < optimizer.StateNames.Count; k++)
            {
                var name = $"{optimizer.StateNames[k]}.{p.Name}";
                if (!f.Contains(name)) throw new InvalidDataException($"'{optPath}' has no tensor '{name}'.");
                var (_, shape) = f.Info(name);
                if (!shape.SequenceEqual(p.Shape)) throw new InvalidDataException($"'{optPath}': tensor '{name}' has shape [{string.Join(", ", shape)}], expected [{string.Join(", ", p.Shape)}].");
                var values = f.Read(name).ToFloats();
                values.AsSpan((int)(b - store.Offset(i)), (int)(e - b)).CopyTo(optimizer.State(k).Slice((int)(b - optimizer.Begin)));
            }
        }
        return state;
    }

    /// <summary>Reads trainer_state.json, refusing a missing or malformed file by name.</summary>
    public static TrainerState ReadState(string dir)
    {
        var path = Path.Combine(dir, StateFile);
        if (!Directory.Exists(dir)) throw new DirectoryNotFoundException($"Checkpoint folder '{dir}' does not exist.");
        if (!File.Exists(path)) throw new InvalidDataException($"Checkpoint '{dir}' has no {StateFile} (incomplete checkpoint?).");
        TrainerState? s;
        try { s = JsonSerializer.Deserialize<TrainerState>(File.ReadAllBytes(path), Json); }
        catch (JsonException e) { throw new InvalidDataException($"'{path}' is not a valid trainer state: {e.Message}", e); }
        if (s is null || s.Format != TrainerState.CurrentFormat)
            throw new InvalidDataException($"'{path}': format '{s?.Format}' is not {TrainerState.CurrentFormat}.");
        if (s.Step < 0 || s.SamplesSeen < 0) throw new InvalidDataException($"'{path}': step {s.Step} / samples_seen {s.SamplesSeen} are invalid.");
        return s;
    }

    internal static string Sha256(string path)
    {
        using var f = File.OpenRead(path);
        return Convert.ToHexString(SHA256.HashData(f)).ToLowerInvariant();
    }
}

using System.Security.Cryptography;
using System.Text.Json;
using System.Text.Json.Serialization;
using Optimum.Distributed;
using Optimum.Hub;
using Optimum.Onnx;
using Optimum.Core;

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
    /// <summary>Samples per update over all ranks (batch size x grad accum x world size): must match to resume.</summary>
    public long GlobalBatch { get; init; }
    public string Optimizer { get; init; } = "";
    public string Schedule { get; init; } = "";
    public double Lr { get; init; }
    public long Warmup { get; init; }
    /// <summary>The EMA settings of a run that averages its weights (ema.safetensors), or null.</summary>
    public EmaOptions? Ema { get; init; }
    /// <summary>
    /// Frozen parameters (graph order; empty for a run that trains all): model.safetensors leaves them out and the optimizer
    /// holds no state for them, since they are the base model's and never change.
    /// </summary>
    public IReadOnlyList<string> Frozen { get; init; } = [];
    /// <summary>SHA-256 of the frozen weights (<see cref="Freezing.Checksum"/>); a resume against other base weights is refused. Null when nothing is frozen.</summary>
    public string? FrozenSha256 { get; init; }
    /// <summary>The run's <see cref="TrainerOptions.Precision"/> (fp32 for checkpoints made before it existed); fp16 checkpoints hold the loss scaler's state.</summary>
    public string Precision { get; init; } = "fp32";
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
        AllowDuplicateProperties = false,                                            // a field twice is ambiguous: refused, not last-wins
    };

    /// <summary>
    /// Writes checkpoint <paramref name="state"/>.Step under <paramref name="root"/> and prunes to the last
    /// <paramref name="keep"/>; returns its folder. Every rank calls it: each writes its optimizer shard,
    /// rank 0 the parameters and the trainer state, then renames the temporary folder into place.
    /// </summary>
    public static string Save(string root, ParameterStore store, Optimizer optimizer, TrainerState state, int keep, ICommunicator? comm = null, EmaWeights? ema = null, LossScaler? scaler = null)
    {
        comm ??= new SingleProcess();
        var final = Path.Combine(root, $"{Prefix}{state.Step:D7}");
        var tmp = Path.Combine(root, $".{Prefix}{state.Step:D7}.tmp");
        if (comm.Rank == 0)
        {
            Directory.CreateDirectory(root);
            foreach (var stale in Directory.GetDirectories(root, $".{Prefix}*.tmp")) Directory.Delete(stale, true);
            Directory.CreateDirectory(tmp);
        }
        comm.Barrier();
        FaultInjection.AtCheckpoint(comm.Rank);
        var optFile = comm.Size == 1 ? OptimizerFile : $"optimizer-rank{comm.Rank:D3}-of-{comm.Size:D3}.safetensors";
        var meta = new Dictionary<string, string> { ["optimizer"] = EnumNames.Name(optimizer.Config.Kind) };
        SafeTensorsFile.Write(Path.Combine(tmp, optFile), OptimizerTensors(store, optimizer, meta), meta);
        // What changes only: frozen weights are the base model's (their checksum is in the state).
        var frozen = state.Frozen.ToHashSet(StringComparer.Ordinal);
        if (comm.Rank == 0) HfWeights.Save(Path.Combine(tmp, ModelFolder.WeightsFile), store.Parameters, i => store.Param(i), frozen.Contains);
        if (comm.Rank == 0 && state.Ema is not null)
            (ema ?? throw new ArgumentException("The state names EMA settings but no EMA weights were given.", nameof(ema))).Save(Path.Combine(tmp, EmaWeights.File));
        // Every rank holds the same scale (overflows are agreed on): rank 0 writes it.
        if (comm.Rank == 0 && scaler is not null) scaler.Save(tmp);
        comm.Barrier();
        if (comm.Rank == 0)
        {
            // Every rank's shard must be in the folder (ranks on machines without a shared file system would not be).
            for (int r = 0; r < comm.Size && comm.Size > 1; r++)
                if (!File.Exists(Path.Combine(tmp, $"optimizer-rank{r:D3}-of-{comm.Size:D3}.safetensors")))
                    throw new IOException($"Checkpoint {state.Step}: rank {r}'s optimizer shard is missing from '{tmp}'; the checkpoint folder must be on storage all ranks share.");
            var files = new SortedDictionary<string, string>(StringComparer.Ordinal);
            foreach (var f in Directory.GetFiles(tmp).Order(StringComparer.Ordinal)) files[Path.GetFileName(f)] = Sha256(f);
            AtomicFile.Write(Path.Combine(tmp, StateFile), JsonSerializer.SerializeToUtf8Bytes(state with { Files = files, WorldSize = comm.Size }, Json));
            // Replacing a checkpoint of the same step: set the old one aside until the new one is in place.
            var aside = Path.Combine(root, $".{Prefix}{state.Step:D7}.old");
            if (Directory.Exists(aside)) Directory.Delete(aside, true);
            if (Directory.Exists(final)) Directory.Move(final, aside);
            Directory.Move(tmp, final);
            if (Directory.Exists(aside)) Directory.Delete(aside, true);
            foreach (var old in List(root).SkipLast(Math.Max(1, keep))) Directory.Delete(old, true);
        }
        comm.Barrier();
        return final;
    }

    /// <summary>Checkpoint folders under <paramref name="root"/>, oldest first.</summary>
    public static IReadOnlyList<string> List(string root) => !Directory.Exists(root) ? []
        : Directory.GetDirectories(root, Prefix + "*").Where(d => long.TryParse(Path.GetFileName(d)[Prefix.Length..], out _))
            .OrderBy(d => long.Parse(Path.GetFileName(d)[Prefix.Length..])).ToArray();

    /// <summary>The newest checkpoint under <paramref name="root"/>, or null.</summary>
    public static string? Latest(string root) => List(root).LastOrDefault();

    /// <summary>
    /// The optimizer's state per parameter (PyTorch names: exp_avg.&lt;param&gt;). A parameter cut by a
    /// shard boundary is stored as a 1-D slice with its element offset in the metadata (offset.&lt;tensor&gt;).
    /// </summary>
    private static IEnumerable<SafeTensorSource> OptimizerTensors(ParameterStore store, Optimizer opt, Dictionary<string, string> meta)
    {
        foreach (var (i, b, e) in store.Segments(opt.Begin, opt.End))
        {
            var p = store.Parameters[i];
            bool whole = b == store.Offset(i) && e == store.Offset(i) + p.Count;
            for (int k = 0; k < opt.StateNames.Count; k++)
            {
                var name = $"{opt.StateNames[k]}.{p.Name}";
                if (!whole) meta["offset." + name] = (b - store.Offset(i)).ToString(System.Globalization.CultureInfo.InvariantCulture);
                int state = k;
                // Streamed from the optimizer's buffer as the file is written: no copy of the state is held.
                yield return SafeTensorSource.Floats(name, whole ? p.Shape : [e - b], () => opt.State(state).Slice((int)(b - opt.Begin), (int)(e - b)));
            }
        }
    }

    /// <summary>
    /// Reads and verifies a checkpoint into <paramref name="store"/> and <paramref name="optimizer"/>:
    /// a missing file, a checksum that differs (corruption), a truncated safetensors file, a missing
    /// tensor or a shape that differs is refused naming the file and the tensor. The frozen parameters the state lists are not
    /// read: the store must already hold the base weights they were frozen at, which is checked against the state's checksum.
    /// </summary>
    public static TrainerState Load(string dir, ParameterStore store, Optimizer optimizer, EmaWeights? ema = null, LossScaler? scaler = null)
    {
        var state = ReadState(dir);
        if (scaler is not null && !state.Files.ContainsKey(LossScaler.FileName))
            throw new InvalidDataException($"'{Path.Combine(dir, StateFile)}' lists no {LossScaler.FileName}: the checkpoint was not made by an fp16 run, whose loss scale a resume continues.");
        foreach (var (file, hash) in state.Files)
        {
            var path = Path.Combine(dir, file);
            if (!File.Exists(path)) throw new InvalidDataException($"Checkpoint '{dir}' lacks {file}, which its {StateFile} lists in files.");
            if (Sha256(path) != hash) throw new InvalidDataException($"Checkpoint file '{path}' is corrupted: its SHA-256 differs from the one {StateFile} lists in files.");
        }
        if (!state.Files.ContainsKey(ModelFolder.WeightsFile) || !state.Files.Keys.Any(f => f.StartsWith("optimizer", StringComparison.Ordinal)))
            throw new InvalidDataException($"'{Path.Combine(dir, StateFile)}': files must list {ModelFolder.WeightsFile} and the optimizer state ({OptimizerFile}, or one optimizer-rankNNN-of-NNN.safetensors per rank).");
        var frozen = state.Frozen.ToHashSet(StringComparer.Ordinal);
        if (frozen.Count > 0)
        {
            var stray = frozen.Where(f => !store.Parameters.Any(p => p.Name == f)).ToArray();
            if (stray.Length > 0) throw new InvalidDataException($"'{Path.Combine(dir, StateFile)}' freezes {string.Join(", ", stray)}, which the model lacks.");
            var sum = Freezing.Checksum(store, frozen);
            if (sum != state.FrozenSha256)
                throw new InvalidDataException($"Checkpoint '{dir}' was trained with {frozen.Count} frozen parameter(s) whose base weights have SHA-256 {state.FrozenSha256}; "
                    + $"this run's base weights for them have {sum}. Resume against the same base model (model folder weights and seed) the checkpoint was made from.");
        }
        var saved = store.Parameters.Select((p, i) => (p, i)).Where(x => !frozen.Contains(x.p.Name)).ToArray();
        var loaded = HfWeights.Load(Path.Combine(dir, ModelFolder.WeightsFile), saved.Select(x => x.p).ToArray(), out var unused);
        for (int k = 0; k < saved.Length; k++) loaded[k].CopyTo(store.Param(saved[k].i));
        if (unused.Count > 0)
            throw new InvalidDataException($"Checkpoint '{Path.Combine(dir, ModelFolder.WeightsFile)}' has tensors the model lacks: {string.Join(", ", unused)}.");
        if (state.Ema is not null && !state.Files.ContainsKey(EmaWeights.File))
            throw new InvalidDataException($"'{Path.Combine(dir, StateFile)}' names EMA settings but its files do not list {EmaWeights.File}.");
        if (ema is not null && state.Files.ContainsKey(EmaWeights.File)) ema.Load(Path.Combine(dir, EmaWeights.File));
        scaler?.Load(dir);
        // Optimizer state may come from any number of rank files: index every slice, then copy ours (re-sharding).
        var slices = new Dictionary<string, List<(string File, long Offset, long Length)>>(StringComparer.Ordinal);
        var optimizerFiles = state.Files.Keys.Where(f => f.StartsWith("optimizer", StringComparison.Ordinal)).ToArray();
        foreach (var file in optimizerFiles)
        {
            var path = Path.Combine(dir, file);
            using var f = SafeTensorsFile.Open(path);
            if (f.Metadata.TryGetValue("optimizer", out var kind) && kind != EnumNames.Name(optimizer.Config.Kind))
                throw new InvalidDataException($"'{path}' holds {kind} state but the run uses {EnumNames.Name(optimizer.Config.Kind)}.");
            foreach (var name in f.Names)
            {
                long offset = 0;
                if (f.Metadata.TryGetValue("offset." + name, out var o)
                    && !long.TryParse(o, System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out offset))
                    throw new InvalidDataException($"'{path}': __metadata__ offset.{name} is '{o}', not an element offset (digits only).");
                var (_, shape) = f.Info(name);
                if (!slices.TryGetValue(name, out var list)) slices[name] = list = [];
                list.Add((path, offset, shape.Aggregate(1L, (a, d) => a * d)));
            }
        }
        var open = new Dictionary<string, SafeTensorsFile>();
        try
        {
            foreach (var (i, b, e) in store.Segments(optimizer.Begin, optimizer.End))
            {
                var p = store.Parameters[i];
                for (int k = 0; k < optimizer.StateNames.Count; k++)
                {
                    var name = $"{optimizer.StateNames[k]}.{p.Name}";
                    long from = b - store.Offset(i), to = e - store.Offset(i), covered = 0;
                    if (!slices.TryGetValue(name, out var parts))
                        throw new InvalidDataException($"Checkpoint '{dir}': {string.Join(", ", optimizerFiles)} hold no optimizer tensor '{name}'.");
                    foreach (var (file, offset, length) in parts)
                    {
                        if (offset > p.Count - length)
                            throw new InvalidDataException($"'{file}': tensor '{name}' holds elements {offset} to {offset + length} of '{p.Name}', which has {p.Count}.");
                        long lo = Math.Max(from, offset), hi = Math.Min(to, offset + length);
                        if (lo >= hi) continue;
                        if (!open.TryGetValue(file, out var f)) open[file] = f = SafeTensorsFile.Open(file);
                        var (type, shape) = f.Info(name);
                        if (shape.Length > 1 && !shape.SequenceEqual(p.Shape))
                            throw new InvalidDataException($"'{file}': tensor '{name}' has shape [{string.Join(", ", shape)}], expected [{string.Join(", ", p.Shape)}].");
                        if (type is not (DType.Float or DType.Float16 or DType.BFloat16 or DType.Double))
                            throw new InvalidDataException($"'{file}': tensor '{name}' is {type.Name()}; optimizer state must be floating-point.");
                        var values = f.Read(name).ToFloats().AsSpan((int)(lo - offset), (int)(hi - lo));
                        // Non-finite moments would turn the first resumed update into NaN weights: corrupt state, refused here.
                        int bad = FirstNonFinite(values);
                        if (bad >= 0) throw new InvalidDataException($"'{file}': tensor '{name}' holds {values[bad].ToString(System.Globalization.CultureInfo.InvariantCulture)} at element {lo - offset + bad}; optimizer state must be finite.");
                        values.CopyTo(optimizer.State(k).Slice((int)(store.Offset(i) + lo - optimizer.Begin)));
                        covered += hi - lo;
                    }
                    if (covered != to - from)
                        throw new InvalidDataException($"Checkpoint '{dir}': {string.Join(", ", optimizerFiles)} cover {covered} of the {to - from} elements of '{name}' this rank needs.");
                }
            }
        }
        finally
        {
            foreach (var f in open.Values) f.Dispose();
        }
        return state;
    }

    private static int FirstNonFinite(ReadOnlySpan<float> values)
    {
        for (int i = 0; i < values.Length; i++) if (!float.IsFinite(values[i])) return i;
        return -1;
    }

    /// <summary>The fields every trainer_state.json must hold (ema is optional: null for runs without EMA).</summary>
    public static readonly IReadOnlyList<string> RequiredStateFields =
        ["format", "step", "samples_seen", "skipped_steps", "seed", "total_steps", "batch_size", "grad_accum", "world_size", "global_batch",
         "optimizer", "schedule", "lr", "warmup", "files"];

    /// <summary>Reads trainer_state.json, refusing a missing or malformed file, a missing field or a value out of range by name.</summary>
    public static TrainerState ReadState(string dir)
    {
        var path = Path.Combine(dir, StateFile);
        if (!Directory.Exists(dir)) throw new DirectoryNotFoundException($"Checkpoint folder '{dir}' does not exist.");
        if (!File.Exists(path)) throw new InvalidDataException($"Checkpoint '{dir}' has no {StateFile} (incomplete checkpoint?).");
        TrainerState? s;
        var bytes = File.ReadAllBytes(path).AsMemory();
        if (bytes.Span.StartsWith("\uFEFF"u8)) bytes = bytes[3..];                              // a UTF-8 byte order mark, as an editor may add
        try
        {
            // Every field is required: a missing one would silently take its default (a missing step restarts the schedule at 0).
            using (var doc = JsonDocument.Parse(bytes, new JsonDocumentOptions { AllowDuplicateProperties = false }))
            {
                if (doc.RootElement.ValueKind != JsonValueKind.Object) throw new InvalidDataException($"'{path}' is not a valid trainer state: it is not a JSON object.");
                foreach (var field in RequiredStateFields)
                    if (!doc.RootElement.TryGetProperty(field, out var v) || v.ValueKind == JsonValueKind.Null)
                        throw new InvalidDataException($"'{path}': field '{field}' is missing; a checkpoint's trainer state needs {string.Join(", ", RequiredStateFields)}.");
                ReadStrings(doc.RootElement);
            }
            s = JsonSerializer.Deserialize<TrainerState>(bytes.Span, Json);
        }
        catch (JsonException e) { throw new InvalidDataException($"'{path}' is not a valid trainer state: {e.Message}", e); }
        catch (InvalidOperationException e) { throw new InvalidDataException($"'{path}' is not a valid trainer state: it holds a string that cannot be decoded ({e.Message}).", e); }
        if (s is null || s.Format != TrainerState.CurrentFormat)
            throw new InvalidDataException($"'{path}': format '{s?.Format}' is not {TrainerState.CurrentFormat}.");
        void Check(bool ok, string field, object value, string expected)
        {
            if (!ok) throw new InvalidDataException($"'{path}': field '{field}' is {value}; expected {expected}.");
        }
        Check(s.TotalSteps >= 1, "total_steps", s.TotalSteps, "at least 1");
        Check(s.Step >= 0 && s.Step <= s.TotalSteps, "step", s.Step, $"in [0, total_steps {s.TotalSteps}]");
        Check(s.SkippedSteps >= 0 && s.SkippedSteps <= s.Step, "skipped_steps", s.SkippedSteps, $"in [0, step {s.Step}]");
        Check(s.BatchSize >= 1, "batch_size", s.BatchSize, "at least 1");
        Check(s.GradAccum >= 1, "grad_accum", s.GradAccum, "at least 1");
        Check(s.WorldSize >= 1, "world_size", s.WorldSize, "at least 1");
        Check(s.GlobalBatch == (long)s.BatchSize * s.GradAccum * s.WorldSize, "global_batch", s.GlobalBatch,
            $"batch_size × grad_accum × world_size = {(long)s.BatchSize * s.GradAccum * s.WorldSize}");
        Check(s.SamplesSeen == s.Step * s.GlobalBatch, "samples_seen", s.SamplesSeen, $"step × global_batch = {s.Step * s.GlobalBatch}");
        Check(double.IsFinite(s.Lr) && s.Lr >= 0, "lr", s.Lr, "a finite number >= 0");
        Check(s.Warmup >= 0, "warmup", s.Warmup, ">= 0");
        Check(s.Frozen is not null && s.Frozen.All(f => !string.IsNullOrEmpty(f)), "frozen", "null or holds an empty name", "a list of parameter names (empty when nothing is frozen)");
        Check(s.Frozen!.Count == 0 ? s.FrozenSha256 is null : s.FrozenSha256 is { Length: 64 } h && h.All(Uri.IsHexDigit), "frozen_sha256", s.FrozenSha256 is null ? "null" : $"'{s.FrozenSha256}'",
            s.Frozen.Count == 0 ? "null when nothing is frozen" : "the SHA-256 hex digest of the frozen weights");
        Check(EnumNames.Names<TrainingPrecision>().Contains(s.Precision), "precision", s.Precision is null ? "null" : $"'{s.Precision}'",
            $"one of {string.Join(", ", EnumNames.Names<TrainingPrecision>())} (fp32 when absent: checkpoints made before it existed)");
        Check(s.Files.Count > 0, "files", "empty", "the checksums of the checkpoint's other files");
        foreach (var (file, hash) in s.Files)
            Check(file.Length > 0 && Path.GetFileName(file) == file && hash is { Length: 64 } && hash.All(Uri.IsHexDigit), "files", $"'{file}': {(hash is null ? "null" : $"'{hash}'")}",
                "file names in the checkpoint folder with SHA-256 hex digests");
        return s;
    }

    /// <summary>Decodes every name and string (one escaping half a surrogate pair fails only when read).</summary>
    private static void ReadStrings(JsonElement e)
    {
        switch (e.ValueKind)
        {
            case JsonValueKind.Object:
                foreach (var p in e.EnumerateObject()) { _ = p.Name; ReadStrings(p.Value); }
                break;
            case JsonValueKind.Array:
                foreach (var x in e.EnumerateArray()) ReadStrings(x);
                break;
            case JsonValueKind.String:
                _ = e.GetString();
                break;
        }
    }

    internal static string Sha256(string path)
    {
        using var f = File.OpenRead(path);
        return Convert.ToHexString(SHA256.HashData(f)).ToLowerInvariant();
    }
}

/// <summary>Which checkpoint a run resumes from: a folder, or the newest under the run's checkpoints/ (<c>--resume latest</c>).</summary>
public sealed record CheckpointRef
{
    private CheckpointRef(string? dir) => Dir = dir;

    /// <summary>The newest complete checkpoint of the run.</summary>
    public static CheckpointRef Latest { get; } = new((string?)null);
    /// <summary>A checkpoint folder.</summary>
    public static CheckpointRef At(string dir) => new(string.IsNullOrWhiteSpace(dir) ? throw new ArgumentException("A checkpoint folder path is empty.", nameof(dir)) : dir);
    /// <summary>"latest" or a folder path (the command-line spelling).</summary>
    public static CheckpointRef Parse(string text) => text == "latest" ? Latest : At(text);

    /// <summary>The folder, or null for <see cref="Latest"/>.</summary>
    public string? Dir { get; }
    public bool IsLatest => Dir is null;

    /// <summary>The folder it names under <paramref name="checkpointRoot"/>; no checkpoint there to resume is an error naming the folder.</summary>
    public string Resolve(string checkpointRoot) => Dir ?? Checkpoints.Latest(checkpointRoot)
        ?? throw new DirectoryNotFoundException($"No checkpoint under '{checkpointRoot}' to resume from; start a new run without --resume (with --overwrite if the folder holds an earlier run's files).");

    public override string ToString() => Dir ?? "latest";
}

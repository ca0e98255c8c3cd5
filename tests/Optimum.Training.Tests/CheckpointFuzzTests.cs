using System.Security.Cryptography;
using System.Text.Json;
using System.Text.Json.Nodes;
using Optimum.Core;
using Optimum.Data;
using Optimum.Models;
using Optimum.Tests;
using Optimum.Tests.Fuzz;
using Xunit;
using Xunit.Abstractions;

namespace Optimum.Training.Tests;

/// <summary>
/// Fuzzing checkpoints through the resume path (issue #14): trainer_state.json mutated field by field and garbled; the tensor
/// files truncated, bit-flipped, deleted or swapped (caught by their checksums), and mutated with their checksums updated
/// (so that the safetensors reader and the checks behind it are what refuse them); manifest entries missing or extra;
/// damaged metrics.jsonl. Each input is refused naming the file (and the field), or resumes; nothing crashes or hangs, and a
/// refused resume leaves the run folder and the checkpoint as they were.
/// </summary>
public sealed class CheckpointFuzzTests(ITestOutputHelper output) : IDisposable
{
    private readonly string _dir = Repo.TempDir();
    public void Dispose() => Directory.Delete(_dir, true);

    private static readonly Gpt2Config Tiny = new() { VocabSize = 61, NPositions = 16, NEmbd = 16, NLayer = 2, NHead = 2 };
    private static readonly EmaOptions EmaSettings = new();
    private static readonly string[] TensorFiles = [ModelFolder.WeightsFile, EmaWeights.File, Checkpoints.OptimizerFile];

    private static LmData Data()
    {
        var rng = new Random(1);
        return new LmData(Enumerable.Range(0, 600).Select(i => rng.NextDouble() < 0.1 ? rng.Next(61) : (i * 7) % 61).ToArray(), 12, 0.1);
    }

    private TrainerOptions Options(string model, string outDir) => new()
    {
        ModelDir = model, OutputDir = outDir, Steps = 4, BatchSize = 3, GradAccum = 2, Lr = 1e-2, Warmup = 2, Schedule = ScheduleKind.Cosine,
        EvalEvery = 0, EvalAtStart = false, EvalSamples = 3, SaveEvery = 0, KeepCheckpoints = 5, Seed = 7, Export = false, Ema = EmaSettings,
        Session = new SessionSettings { IntraOpThreads = 1 },
    };

    /// <summary>The model, the checkpoint of a run stopped after 2 of its 4 updates (with EMA weights), and that run's folder.</summary>
    private (string Model, string Checkpoint, string Run) Setup()
    {
        var model = Path.Combine(_dir, "model");
        ModelKinds.Write(model, Tiny);
        var run = Path.Combine(_dir, "run");
        using (var t = new Trainer(Options(model, run) with { StopAfter = 2 }, Data(), Init(model))) t.Run();
        return (model, Checkpoints.Latest(Path.Combine(run, "checkpoints"))!, run);
    }

    private static float[][] Init(string model) => ModelKinds.Initialize(ModelFolder.ReadParameters(model), Tiny, seed: 3);

    private static string Sha(byte[] bytes) => Convert.ToHexString(SHA256.HashData(bytes)).ToLowerInvariant();

    /// <summary>A fresh copy of the good checkpoint to mutate (same folder name, so that the step in it still matches).</summary>
    private string Copy(string good)
    {
        var m = Path.Combine(_dir, "mutated", Path.GetFileName(good));
        if (Directory.Exists(m)) Directory.Delete(m, true);
        Directory.CreateDirectory(m);
        foreach (var f in Directory.GetFiles(good)) File.Copy(f, Path.Combine(m, Path.GetFileName(f)));
        return m;
    }

    /// <summary>Rewrites the manifest of <paramref name="dir"/> so that <paramref name="file"/>'s checksum is its current one.</summary>
    private static void Rehash(string dir, string file)
    {
        var path = Path.Combine(dir, Checkpoints.StateFile);
        var state = JsonNode.Parse(File.ReadAllText(path))!.AsObject();
        state["files"]![file] = Sha(File.ReadAllBytes(Path.Combine(dir, file)));
        File.WriteAllText(path, state.ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
    }

    /// <summary>Checkpoints.Load (what a resume calls first) into a fresh store, optimizer and EMA; <paramref name="verify"/> checks an accepted load.</summary>
    private static void Load(Campaign c, Mutation m, IReadOnlyList<ParameterInfo> ps, string dir, string file, Func<ParameterStore, Optimizer, EmaWeights, string?>? verify = null,
        string? orFile = null)
    {
        using var store = new ParameterStore(ps);
        using var opt = Optimizer.Create(store, new OptimizerConfig());
        var ema = new EmaWeights(store, EmaSettings);
        c.Attempt(m, () => Checkpoints.Load(dir, store, opt, ema), file, dir, () => verify?.Invoke(store, opt, ema), orFile);
    }

    /// <summary>
    /// A whole resume from <paramref name="dir"/> into a run folder holding the original run's metrics.jsonl: refused with the
    /// run folder and the checkpoint unchanged, or run to the end (a final checkpoint at step 4).
    /// </summary>
    private void Resume(Campaign c, Mutation m, string model, string run, string dir, string file, string? field, string? metrics = null, string? orFile = null)
    {
        var into = Path.Combine(_dir, "resume");
        if (Directory.Exists(into)) Directory.Delete(into, true);
        Directory.CreateDirectory(into);
        File.WriteAllText(Path.Combine(into, "metrics.jsonl"), metrics ?? File.ReadAllText(Path.Combine(run, "metrics.jsonl")));
        File.WriteAllBytes(Path.Combine(into, RunFolder.LockFile), []);          // a used run folder has its (empty) lock file
        var (beforeRun, beforeCheckpoint) = (Campaign.Snapshot(into), Campaign.Snapshot(dir));
        bool accepted = c.Attempt(m, () =>
        {
            using var t = new Trainer(Options(model, into) with { Resume = CheckpointRef.At(dir) }, Data(), Init(model));
            t.Run();
        }, file, field, () => Checkpoints.Latest(Path.Combine(into, "checkpoints")) is { } last && last.EndsWith("checkpoint-0000004", StringComparison.Ordinal)
            && File.ReadLines(Path.Combine(into, "metrics.jsonl")).All(IsJson) ? null : "the resumed run did not finish with a checkpoint at step 4 and a readable metrics.jsonl", orFile);
        if (!accepted && (Campaign.Snapshot(into) != beforeRun || Campaign.Snapshot(dir) != beforeCheckpoint))
            c.HalfWrite(m, "a refused resume changed the run folder or the checkpoint");
    }

    private static bool IsJson(string line)
    {
        try
        {
            using var _ = JsonDocument.Parse(line);
            return true;
        }
        catch (JsonException) { return false; }
    }

    /// <summary>trainer_state.json: every field removed, null, of wrong types, edge and extreme values; garbled text; through the whole resume.</summary>
    [Fact]
    public void TrainerStateMutations_AreRefusedNamingTheFieldOrResume()
    {
        var (model, good, run) = Setup();
        var state = JsonNode.Parse(File.ReadAllText(Path.Combine(good, Checkpoints.StateFile)))!.AsObject();
        long V(string key) => state[key]!.GetValue<long>();
        var files = state["files"]!.DeepClone();
        var ema = state["ema"]!.AsObject();
        KeyRule[] rules =
        [
            ConfigRules.Str("format", [TrainerState.CurrentFormat], ["optimum-net-checkpoint/2", "OPTIMUM-NET-CHECKPOINT/1"], absentOk: false),
            ConfigRules.Same("step", (int)V("step")), ConfigRules.Same("samples_seen", (int)V("samples_seen")),          // step × global_batch
            ConfigRules.IntWhere("skipped_steps", 0, s => s >= 0 && s <= V("step"), absentOk: false),
            ConfigRules.Same("seed", 7), ConfigRules.Same("total_steps", 4),                                               // a resume needs the run's own
            ConfigRules.Same("batch_size", 3), ConfigRules.Same("grad_accum", 2), ConfigRules.Same("world_size", 1), ConfigRules.Same("global_batch", 6),
            ConfigRules.Str("optimizer", ["adamw"], ["sgd", "AdamW"], absentOk: false),
            ConfigRules.AnyString("schedule", absentOk: false),                                                          // the run's schedule is used
            ConfigRules.NumWhere("lr", lr => lr >= 0, absentOk: false), ConfigRules.LongWhere("warmup", (int)V("warmup"), w => w >= 0, absentOk: false),
            // EMA settings must be the run's: unknown fields are ignored and absent ones take the defaults, which the run uses.
            new("ema", n => n is JsonObject o && o.All(kv => !ema.ContainsKey(kv.Key) || JsonNode.DeepEquals(kv.Value, ema[kv.Key])), false, false,
                [[new JsonObject(), new JsonObject { ["max_decay"] = 0.5 }, new JsonObject { ["power"] = "x" }, new JsonObject { ["fuzz"] = 1 }, 5, "ema", new JsonArray()]]),
            // Nothing frozen in this run: another frozen set is refused (resume needs the run's), as is a checksum without one.
            ConfigRules.List("frozen", a => a.Count == 0, [new JsonArray(), new JsonArray("transformer.wte.weight"), new JsonArray(5), new JsonArray("")], absentOk: true, nullOk: false),
            new("frozen_sha256", _ => false, true, true, [[new string('a', 64), "x", 5, new JsonArray()]]),
            // This run is fp32: fp32, tf32 and bf16 checkpoints continue it (the same state), an fp16 one is refused (its loss
            // scaler's state), as is anything that is not a precision's name; absent is fp32 (checkpoints made before it existed).
            new("precision", n => n is JsonValue j && j.GetValueKind() == JsonValueKind.String && j.GetValue<string>() is "fp32" or "tf32" or "bf16", true, false,
                [["fp32", "tf32", "bf16", "fp16", "FP32", "fp8", "", 5, new JsonArray()]]),
            new("files", n => JsonNode.DeepEquals(n, files), false, false,
                [[new JsonObject(), new JsonArray(), "x", new JsonObject { [ModelFolder.WeightsFile] = 5 }, new JsonObject { [ModelFolder.WeightsFile] = null }]]),
        ];
        var campaign = new Campaign("trainer_state.json");
        var clock = System.Diagnostics.Stopwatch.StartNew();
        var stateText = File.ReadAllText(Path.Combine(good, Checkpoints.StateFile));
        foreach (var (m, bytes, key, _) in new ConfigMutator(stateText, rules, [("fuzz_unknown", 1, true, false)], seed: 1414).Generate())
        {
            var dir = Copy(good);
            File.WriteAllBytes(Path.Combine(dir, Checkpoints.StateFile), bytes);
            Resume(campaign, m, model, run, dir, Checkpoints.StateFile, key);
        }
        output.WriteLine($"{campaign.Summary} ({clock.Elapsed.TotalSeconds:F1} s)");
        campaign.AssertClean();
    }

    /// <summary>
    /// The optimizer file read as a resume reads it: every state tensor of every parameter, whole (its shape, or 1-D with
    /// its element count, at offset 0), floating-point and finite; the optimizer named in the metadata (if any) the run's;
    /// every <c>offset.*</c> in the metadata digits only.
    /// </summary>
    private static StJudgement JudgeOptimizer(byte[] file, IReadOnlyList<ParameterInfo> ps, IReadOnlyList<string> stateNames)
    {
        var (tensors, why) = SafeTensorsOracle.Structure(file);
        if (tensors is null) return new(false, why);
        var meta = SafeTensorsOracle.Metadata(file);
        if (meta.TryGetValue("optimizer", out var kind) && kind != "adamw") return new(false, $"optimizer {kind}");
        var offsets = new Dictionary<string, long>(StringComparer.Ordinal);
        foreach (var t in tensors)
            if (meta.TryGetValue("offset." + t.Name, out var o))
            {
                if (o.Length == 0 || !o.All(char.IsAsciiDigit) || !long.TryParse(o, out var v)) return new(false, $"offset.{t.Name} '{o}'");
                offsets[t.Name] = v;
            }
        var byName = tensors.ToDictionary(t => t.Name, StringComparer.Ordinal);
        var state = new List<float[]>();
        foreach (var p in ps)
            foreach (var s in stateNames)
            {
                var name = $"{s}.{p.Name}";
                if (!byName.TryGetValue(name, out var t)) return new(false, $"no '{name}'");
                long count = t.Shape.Aggregate(1L, (a, d) => a * d), offset = offsets.GetValueOrDefault(name);
                if (offset != 0 || count != p.Count) return new(false, $"'{name}' covers {offset}..{offset + count} of {p.Count}");
                if (t.Shape.Length > 1 && !t.Shape.SequenceEqual(p.Shape)) return new(false, $"'{name}' shape");
                var values = SafeTensorsOracle.Decode(t);
                if (values is null) return new(false, $"'{name}' is {t.DType}");
                if (Array.Exists(values, v => !float.IsFinite(v))) return new(false, $"'{name}' non-finite");
                state.Add(values);
            }
        return new(true, "", [.. state], []);
    }

    /// <summary>
    /// model.safetensors, ema.safetensors and optimizer.safetensors, each mutated as the export fuzzer mutates weights, with
    /// the manifest's checksum updated: what the reader and the checks behind the checksums make of them. The first of each
    /// class goes through the whole resume, the rest through Checkpoints.Load.
    /// </summary>
    [Fact]
    public void TensorFileMutations_WithTheirChecksumsUpdated_AreRefusedNamingTheFileOrLoadExactly()
    {
        var (model, good, run) = Setup();
        var ps = ModelFolder.ReadParameters(model);
        string[] stateNames = ["exp_avg", "exp_avg_sq"];
        var optimizerPs = ps.SelectMany(p => stateNames.Select(s => new ParameterInfo($"{s}.{p.Name}", p.Shape))).ToArray();
        var campaign = new Campaign("checkpoint tensor files");
        var clock = System.Diagnostics.Stopwatch.StartNew();
        var whole = new HashSet<string>(StringComparer.Ordinal);
        int seed = 1420;
        foreach (var file in TensorFiles)
        {
            bool isOptimizer = file == Checkpoints.OptimizerFile;
            var goodBytes = File.ReadAllBytes(Path.Combine(good, file));
            var mutations = new SafeTensorsMutator(goodBytes, isOptimizer ? optimizerPs : ps, seed++).Generate().ToList();
            // The optimizer's own metadata: element offsets of slices.
            var name0 = $"exp_avg.{ps[0].Name}";
            foreach (var (what, offset) in new[] { ("0", "0"), ("past the end", "5"), ("negative", "-1"), ("not a number", "x"), ("empty", ""), ("beyond int64", "99999999999999999999"), ("with a sign", "+0") })
            {
                if (!isOptimizer) break;
                var (tensors, _) = SafeTensorsOracle.Structure(goodBytes);
                var bytes = SafeTensorsMutator.Build(tensors!, new JsonObject { ["optimizer"] = "adamw", ["offset." + name0] = offset });
                mutations.Add(new(new Mutation("optimizer-offset", $"offset.{name0} {what}", Verdict.Valid, ""), bytes, null!));
            }
            foreach (var (m0, bytes, judgement) in mutations)
            {
                // What a checkpoint load must do: an export's verdict, and no tensor the model lacks (for the optimizer, its own reading).
                var j = isOptimizer ? JudgeOptimizer(bytes, ps, stateNames) : judgement.Ok && judgement.Unused!.Count > 0 ? new StJudgement(false, "tensors the model lacks") : judgement;
                var m = m0 with { Class = $"{file}/{m0.Class}", Expected = j.Ok ? Verdict.Valid : Verdict.Invalid, Why = j.Ok ? "oracle accepts" : j.Why };
                var dir = Copy(good);
                File.WriteAllBytes(Path.Combine(dir, file), bytes);
                Rehash(dir, file);
                if (whole.Add(m.Class)) Resume(campaign, m, model, run, dir, file, dir);
                else Load(campaign, m, ps, dir, file, (store, opt, ema) =>
                {
                    float[][] read = file == ModelFolder.WeightsFile ? store.Export() : file == EmaWeights.File ? ema.Export()
                        : [.. ps.SelectMany((p, i) => stateNames.Select((_, k) => opt.State(k).Slice((int)store.Offset(i), (int)p.Count).ToArray()))];
                    for (int i = 0; i < read.Length; i++)
                        if (!read[i].AsSpan().SequenceEqual(j.Weights![i])) return $"tensor {i} read differs from the file's values";
                    return null;
                });
            }
        }
        output.WriteLine($"{campaign.Summary} ({clock.Elapsed.TotalSeconds:F1} s)");
        campaign.AssertClean();
    }

    /// <summary>
    /// Files damaged behind the manifest's back (caught by the checksums), manifest entries missing, extra or wrong, a newer
    /// incomplete checkpoint for --resume latest, and a damaged metrics.jsonl (an output: its unreadable lines are dropped).
    /// </summary>
    [Fact]
    public void ManifestMismatches_AndDamagedFiles_AreRefused_DamagedMetricsResume()
    {
        var (model, good, run) = Setup();
        var ps = ModelFolder.ReadParameters(model);
        var campaign = new Campaign("checkpoint files and manifest");
        var rng = new Random(1415);
        int n = 0;
        void Case(string cls, string what, Verdict v, string file, Action<string> spoil, string? orFile = null)
        {
            var dir = Copy(good);
            spoil(dir);
            var m = new Mutation(cls, what, v, v == Verdict.Valid ? "still a complete checkpoint" : "the manifest does not match the files");
            if (n++ % 3 == 0) Resume(campaign, m, model, run, dir, file, dir, orFile: orFile);
            else Load(campaign, m, ps, dir, file, orFile: orFile);
        }
        void EditState(string dir, Action<JsonObject> edit)
        {
            var path = Path.Combine(dir, Checkpoints.StateFile);
            var o = JsonNode.Parse(File.ReadAllText(path))!.AsObject();
            edit(o);
            File.WriteAllText(path, o.ToJsonString());
        }
        foreach (var file in TensorFiles)
        {
            var size = new FileInfo(Path.Combine(good, file)).Length;
            foreach (var cut in new[] { 0L, 7, size / 2, size - 1 })
                Case("behind-the-manifest", $"{file} cut at {cut} bytes", Verdict.Invalid, file, d => File.WriteAllBytes(Path.Combine(d, file), File.ReadAllBytes(Path.Combine(d, file))[..(int)cut]));
            for (int i = 0; i < 4; i++)
            {
                long at = rng.NextInt64(size);
                int bit = rng.Next(8);
                Case("behind-the-manifest", $"{file} byte {at} bit {bit} flipped", Verdict.Invalid, file, d =>
                {
                    var b = File.ReadAllBytes(Path.Combine(d, file));
                    b[at] ^= (byte)(1 << bit);
                    File.WriteAllBytes(Path.Combine(d, file), b);
                });
            }
            Case("behind-the-manifest", $"{file} deleted", Verdict.Invalid, file, d => File.Delete(Path.Combine(d, file)));
            Case("behind-the-manifest", $"{file} replaced by a folder", Verdict.Invalid, file, d => { File.Delete(Path.Combine(d, file)); Directory.CreateDirectory(Path.Combine(d, file)); });
            Case("manifest", $"{file} not listed", Verdict.Invalid, file, d => EditState(d, o => o["files"]!.AsObject().Remove(file)));
            Case("manifest", $"{file}'s checksum upper-case", Verdict.Invalid, file, d => EditState(d, o => o["files"]![file] = o["files"]![file]!.GetValue<string>().ToUpperInvariant()));
            Case("manifest", $"{file}'s checksum another file's", Verdict.Invalid, file,
                d => EditState(d, o => o["files"]![file] = Sha(File.ReadAllBytes(Path.Combine(d, TensorFiles.First(f => f != file))))));
        }
        Case("behind-the-manifest", "model.safetensors and ema.safetensors swapped", Verdict.Invalid, ModelFolder.WeightsFile, d =>
        {
            File.Move(Path.Combine(d, ModelFolder.WeightsFile), Path.Combine(d, "x"));
            File.Move(Path.Combine(d, EmaWeights.File), Path.Combine(d, ModelFolder.WeightsFile));
            File.Move(Path.Combine(d, "x"), Path.Combine(d, EmaWeights.File));
        }, orFile: EmaWeights.File);
        Case("manifest", "a listed file that is missing", Verdict.Invalid, "notes.txt", d => EditState(d, o => o["files"]!["notes.txt"] = new string('0', 64)));
        Case("manifest", "an extra file, listed with its checksum", Verdict.Valid, "notes.txt", d =>
        {
            File.WriteAllText(Path.Combine(d, "notes.txt"), "notes");
            EditState(d, o => o["files"]!["notes.txt"] = Sha(File.ReadAllBytes(Path.Combine(d, "notes.txt"))));
        });
        Case("manifest", "an extra file, not listed", Verdict.Valid, "notes.txt", d => File.WriteAllText(Path.Combine(d, "notes.txt"), "notes"));
        Case("manifest", "a copy of the optimizer state listed as a rank shard too (covered twice)", Verdict.Invalid, "optimizer-rank000-of-002.safetensors", d =>
        {
            File.Copy(Path.Combine(d, Checkpoints.OptimizerFile), Path.Combine(d, "optimizer-rank000-of-002.safetensors"));
            EditState(d, o => o["files"]!["optimizer-rank000-of-002.safetensors"] = o["files"]![Checkpoints.OptimizerFile]!.DeepClone());
        });
        Case("manifest", "a checksum that is null", Verdict.Invalid, Checkpoints.StateFile, d => EditState(d, o => o["files"]![ModelFolder.WeightsFile] = null));
        Case("manifest", "the state file listed in itself", Verdict.Invalid, Checkpoints.StateFile, d => EditState(d, o => o["files"]![Checkpoints.StateFile] = new string('0', 64)));
        Case("manifest", "ema.safetensors not listed although ema is set", Verdict.Invalid, EmaWeights.File, d =>
        {
            File.Delete(Path.Combine(d, EmaWeights.File));
            EditState(d, o => o["files"]!.AsObject().Remove(EmaWeights.File));
        });
        Case("manifest", "trainer_state.json deleted", Verdict.Invalid, Checkpoints.StateFile, d => File.Delete(Path.Combine(d, Checkpoints.StateFile)));

        // --resume latest finds a newer checkpoint folder without its state (copied in by hand: the trainer's own are atomic).
        {
            var root = Path.Combine(_dir, "latest", "checkpoints");
            var newer = Path.Combine(root, "checkpoint-0000003");
            Directory.CreateDirectory(newer);
            foreach (var f in TensorFiles) File.Copy(Path.Combine(good, f), Path.Combine(newer, f));
            File.WriteAllBytes(Path.Combine(_dir, "latest", RunFolder.LockFile), []);
            var before = Campaign.Snapshot(Path.Combine(_dir, "latest"));
            campaign.Attempt(new Mutation("latest", "the newest checkpoint folder has no trainer_state.json", Verdict.Invalid, "incomplete"), () =>
            {
                using var t = new Trainer(Options(model, Path.Combine(_dir, "latest")) with { Resume = CheckpointRef.Latest }, Data(), Init(model));
                t.Run();
            }, Checkpoints.StateFile, newer);
            if (Campaign.Snapshot(Path.Combine(_dir, "latest")) != before) campaign.HalfWrite(new("latest", "incomplete newest", Verdict.Invalid, ""), "the run folder changed");
        }

        // metrics.jsonl of the run being resumed: a killed run leaves a half-written last line; damage elsewhere is dropped too.
        var lines = File.ReadAllLines(Path.Combine(run, "metrics.jsonl"));
        foreach (var (what, text) in new[]
        {
            ("a half-written last line", string.Join("\n", lines) + "\n{\"step\": 3, \"lo"), ("a garbage line", "\u0000\u0001garbage\n" + string.Join("\n", lines)),
            ("a line without a step", "{\"loss\": 1}\n" + string.Join("\n", lines)), ("a step that is a string", "{\"step\": \"2\"}\n" + string.Join("\n", lines)),
            ("an array line", "[1, 2]\n" + string.Join("\n", lines)), ("empty", ""), ("blank lines", "\n\n" + string.Join("\n\n", lines)),
        })
            Resume(campaign, new Mutation("metrics.jsonl", what, Verdict.Valid, "an output log"), model, run, Copy(good), "metrics.jsonl", null, text);
        output.WriteLine(campaign.Summary);
        campaign.AssertClean();
    }
}

using Optimum.Hub;
using Optimum.Models;
using Optimum.Tests;
using Optimum.Data;
using Xunit;
using Optimum.Core;

namespace Optimum.Training.Tests;

/// <summary>The training loop end to end on a tiny GPT-2 and synthetic tokens.</summary>
public sealed class TrainerTests : IDisposable
{
    private readonly string _dir = Repo.TempDir();
    public void Dispose() => Directory.Delete(_dir, true);

    private static readonly Gpt2Config Tiny = new()
    {
        VocabSize = 61, NPositions = 16, NEmbd = 16, NLayer = 2, NHead = 2, EmbdPdrop = 0.1, AttnPdrop = 0.1, ResidPdrop = 0.1,
    };

    private string Model(Gpt2Config c, string name = "model")
    {
        var dir = Path.Combine(_dir, name);
        if (!Directory.Exists(dir)) ModelKinds.Write(dir, c);
        return dir;
    }

    private static LmData Data(int seqLen = 12)
    {
        // A learnable stream: mostly an arithmetic pattern, some noise.
        var rng = new Random(1);
        var tokens = Enumerable.Range(0, 4000).Select(i => rng.NextDouble() < 0.1 ? rng.Next(61) : (i * 7) % 61).ToArray();
        return new LmData(tokens, seqLen, 0.1);
    }

    private TrainerOptions Options(string model, string outDir, long steps = 20) => new()
    {
        ModelDir = model, OutputDir = Path.Combine(_dir, outDir), Steps = steps, BatchSize = 3, GradAccum = 2, Lr = 1e-2, Warmup = Math.Min(4, steps),
        Schedule = ScheduleKind.Cosine, ClipNorm = 0.5, EvalEvery = 5, EvalSamples = 6, SaveEvery = 0, Seed = 7, Export = false,
        Session = new SessionSettings { IntraOpThreads = 1 },
    };

    private static float[][] Init(string model, int seed = 3) => ModelKinds.Initialize(ModelFolder.ReadParameters(model), Tiny, seed);

    [Fact]
    public void Evaluate_ReleasesTheEvalSessionAndReopensItToTheSameLoss()
    {
        var model = Model(Tiny);
        using var t = new Trainer(Options(model, "eval"), Data(), Init(model));
        double first = t.Evaluate();                       // opens the eval session, evaluates, releases it
        double again = t.Evaluate();                       // a fresh session over the same weights
        Assert.True(double.IsFinite(first) && first > 0, $"validation loss {first}");
        Assert.Equal(first, again);
        t.Session.ReleaseEval();                           // already released: nothing to do
    }

    [Fact]
    public void ResumeIsExact_TwentyStepsEqualTenPlusTen()
    {
        var model = Model(Tiny);
        float[][] straight;
        using (var t = new Trainer(Options(model, "straight"), Data(), Init(model)))
        {
            var r = t.Run();
            Assert.Equal(20, r.Steps);
            Assert.True(r.History[^1].Loss < r.History[0].Loss - 0.3, $"loss {r.History[0].Loss} -> {r.History[^1].Loss}");
            straight = t.Store.Export();
        }
        using (var cts = new CancellationTokenSource())
        using (var t = new Trainer(Options(model, "split"), Data(), Init(model)))
        {
            t.StepCompleted += m => { if (m.Step == 10) cts.Cancel(); };
            var r = t.Run(cts.Token);
            Assert.True(r.Interrupted);
            Assert.Equal(10, r.Steps);
            Assert.EndsWith("checkpoint-0000010", r.LastCheckpoint);
        }
        using (var t = new Trainer(Options(model, "split") with { Resume = CheckpointRef.Latest }, Data(), Init(model, seed: 99)))
        {
            var r = t.Run();
            Assert.Equal(20, r.Steps);
            Assert.Equal(10, r.History.Count);
            var resumed = t.Store.Export();
            for (int i = 0; i < straight.Length; i++)
                Assert.True(straight[i].AsSpan().SequenceEqual(resumed[i]), $"parameter {t.Store.Parameters[i].Name} differs after resume");
        }
        var log = File.ReadAllLines(Path.Combine(_dir, "split", "metrics.jsonl"));
        Assert.Equal(20, log.Count(l => l.Contains("\"loss\"")));
    }

    [Fact]
    public void GradientAccumulation_EqualsOneBigBatch()
    {
        var model = Model(Tiny with { EmbdPdrop = 0, AttnPdrop = 0, ResidPdrop = 0 }, "nodrop");
        float[][] Run(int batch, int accum)
        {
            using var t = new Trainer(Options(model, $"acc{batch}x{accum}", steps: 3) with { BatchSize = batch, GradAccum = accum, ClipNorm = 0 }, Data(), Init(model));
            t.Run();
            return t.Store.Export();
        }
        var a = Run(4, 1);
        var b = Run(2, 2);
        var c = Run(1, 4);
        for (int i = 0; i < a.Length; i++)
            for (int k = 0; k < a[i].Length; k++)
            {
                Assert.Equal(a[i][k], b[i][k], 5e-6f);
                Assert.Equal(a[i][k], c[i][k], 5e-6f);
            }
    }

    [Fact]
    public void NonFiniteLoss_StopsNamingTheStep_OrIsSkippedAndCounted()
    {
        var model = Model(Tiny);
        var w = Init(model);
        w[0][5] = float.NaN;   // the embedding of a token in the data
        using (var t = new Trainer(Options(model, "nan"), Data(), w))
        {
            var e = Assert.Throws<TrainingDivergedException>(() => t.Run());
            Assert.Contains("Step 1:", e.Message);
        }
        using (var t = new Trainer(Options(model, "nan-skip", steps: 4) with { SkipNonFinite = true }, Data(), w))
        {
            var r = t.Run();
            Assert.Equal(4, r.SkippedSteps);
            Assert.All(r.History, m => Assert.True(m.Skipped));
            Assert.Equal(w[1], t.Store.Param(1).ToArray());   // no update was applied
        }
    }

    [Fact]
    public void Checkpoints_AreKeptToTheLastK_AndBadOnesAreRefused()
    {
        var model = Model(Tiny);
        using (var t = new Trainer(Options(model, "ck", steps: 12) with { SaveEvery = 3, KeepCheckpoints = 2 }, Data(), Init(model)))
            t.Run();
        var root = Path.Combine(_dir, "ck", "checkpoints");
        Assert.Equal(["checkpoint-0000009", "checkpoint-0000012"], Checkpoints.List(root).Select(Path.GetFileName));
        Assert.Empty(Directory.GetDirectories(root, ".*"));                 // no temporary folders left

        var ck = Checkpoints.Latest(root)!;
        var bad = Path.Combine(_dir, "bad");
        void Fresh() { if (Directory.Exists(bad)) Directory.Delete(bad, true); CopyDir(ck, bad); }
        TrainerState Load(string dir)
        {
            using var store = new ParameterStore(ModelFolder.ReadParameters(model));
            using var opt = Optimizer.Create(store, new OptimizerConfig());
            return Checkpoints.Load(dir, store, opt);
        }
        Assert.Equal(12, Load(ck).Step);

        Fresh();
        var weights = Path.Combine(bad, "model.safetensors");
        var bytes = File.ReadAllBytes(weights);
        bytes[^7] ^= 0x40;
        File.WriteAllBytes(weights, bytes);
        Assert.Contains("model.safetensors' is corrupted", Assert.Throws<InvalidDataException>(() => Load(bad)).Message);

        Fresh();
        File.Delete(Path.Combine(bad, Checkpoints.StateFile));
        Assert.Contains("has no trainer_state.json", Assert.Throws<InvalidDataException>(() => Load(bad)).Message);

        Fresh();
        File.WriteAllText(Path.Combine(bad, Checkpoints.StateFile), "{\"format\": \"optimum-net-checkpoint/1\", \"step\": \"twelve\"}");
        Assert.Contains("field 'samples_seen' is missing", Assert.Throws<InvalidDataException>(() => Load(bad)).Message);

        // Every field of the state is required and range-checked (a missing step would restart the schedule on trained weights).
        var good = System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(Path.Combine(ck, Checkpoints.StateFile)))!.AsObject();
        string Refusal(Action<System.Text.Json.Nodes.JsonObject> spoil)
        {
            Fresh();
            var st = (System.Text.Json.Nodes.JsonObject)good.DeepClone();
            spoil(st);
            File.WriteAllText(Path.Combine(bad, Checkpoints.StateFile), st.ToJsonString());
            return Assert.Throws<InvalidDataException>(() => Load(bad)).Message;
        }
        foreach (var field in Checkpoints.RequiredStateFields)
        {
            var m = Refusal(st => st.Remove(field));
            Assert.Contains($"field '{field}' is missing", m);
            Assert.Contains(Checkpoints.StateFile, m);
        }
        foreach (var field in new[] { "step", "samples_seen", "skipped_steps", "batch_size", "grad_accum", "world_size", "global_batch", "total_steps", "warmup", "lr" })
            Assert.Contains($"field '{field}' is -1", Refusal(st => st[field] = -1));
        Assert.Contains("field 'samples_seen' is 95; expected step × global_batch = 72", Refusal(st => st["samples_seen"] = 95));
        Assert.Contains("field 'global_batch' is 12; expected batch_size × grad_accum × world_size = 6", Refusal(st => st["global_batch"] = 12));
        Assert.Contains("field 'step' is 13; expected in [0, total_steps 12]", Refusal(st => { st["step"] = 13; st["samples_seen"] = 78; }));
        Assert.Contains("is not a valid trainer state", Refusal(st => st["step"] = "twelve"));
        Assert.Contains("field 'files'", Refusal(st => st["files"] = new System.Text.Json.Nodes.JsonObject { ["../model.safetensors"] = new string('0', 64) }));

        // A checkpoint of another model: the tensor whose shape differs is named.
        var wide = Model(Tiny with { NEmbd = 20 }, "wide");
        using (var store = new ParameterStore(ModelFolder.ReadParameters(wide)))
        using (var opt = Optimizer.Create(store, new OptimizerConfig()))
        {
            var e = Assert.Throws<InvalidDataException>(() => Checkpoints.Load(ck, store, opt));
            Assert.Contains("tensor 'transformer.wte.weight' has shape [61, 16], the model needs [61, 20]", e.Message);
        }

        // Resuming with another batch size would change the data order: refused.
        using var t2 = new Trainer(Options(model, "ck", steps: 12) with { BatchSize = 4, Resume = CheckpointRef.Latest }, Data(), Init(model));
        Assert.Contains("global batch (batch size x grad accum x ranks) 6; this run has 8", Assert.Throws<InvalidDataException>(() => t2.Run()).Message);
    }

    private static void CopyDir(string from, string to)
    {
        Directory.CreateDirectory(to);
        foreach (var f in Directory.GetFiles(from)) File.Copy(f, Path.Combine(to, Path.GetFileName(f)));
    }

    [Fact]
    public void FinalExport_WritesModelFolderAndHfFolder()
    {
        var model = Model(Tiny);
        using var t = new Trainer(Options(model, "exp", steps: 2) with { Export = true }, Data(), Init(model));
        t.Run();
        var final = Path.Combine(_dir, "exp", "final");
        foreach (var f in new[] { "config.json", "inference.onnx", "model.safetensors" }) Assert.True(File.Exists(Path.Combine(final, f)), f);
        var hf = Path.Combine(_dir, "exp", "hf");
        Assert.Null(HfConfig.Load(Path.Combine(hf, "config.json")).Json["optimum"]);
        var trained = HfWeights.Load(Path.Combine(hf, "model.safetensors"), t.Store.Parameters, out var unused);
        Assert.Empty(unused);
        Assert.Equal(t.Store.Param(0).ToArray(), trained[0]);
    }
}

using Optimum.Core;
using Optimum.Hub;
using Optimum.Hub.Lora;
using Optimum.Models;
using Optimum.Onnx.Lora;
using Optimum.Tests;
using Xunit;

namespace Optimum.Training.Tests;

/// <summary>LoRA runs (TrainerOptions.Lora) of a tiny GPT-2 through the TrainingJob: what trains, the start, the files written.</summary>
public sealed class LoraTrainingTests : IDisposable
{
    private readonly string _dir = Repo.TempDir();
    public void Dispose() => Directory.Delete(_dir, true);

    /// <summary>GPT-2's BPE vocabulary (the text data needs it), otherwise tiny.</summary>
    private static readonly Gpt2Config Tiny = new()
    {
        VocabSize = 50257, NPositions = 16, NEmbd = 16, NLayer = 2, NHead = 2, EmbdPdrop = 0, AttnPdrop = 0, ResidPdrop = 0,
    };

    private static readonly LoraConfig Lora = new() { R = 4, LoraAlpha = 8, TargetModules = ["c_attn"] };

    private (string Model, string Text) Files()
    {
        var model = Path.Combine(_dir, "gpt2");
        if (!Directory.Exists(model)) ModelKinds.Write(model, Tiny);
        var text = Path.Combine(_dir, "text.txt");
        if (!File.Exists(text))
            File.WriteAllText(text, string.Concat(Enumerable.Range(0, 300).Select(i => $"The {i % 7} cats sat on mat {i % 5}, and the dog ran. ")));
        return (model, text);
    }

    private TrainingJobOptions Options(string outDir, long steps, LoraConfig? lora)
    {
        var (model, text) = Files();
        return new TrainingJobOptions(new TrainerOptions
        {
            ModelDir = model, OutputDir = Path.Combine(_dir, outDir), Steps = steps, BatchSize = 4, Lr = 1e-2, Warmup = 0, Schedule = ScheduleKind.Constant,
            ClipNorm = 0, EvalEvery = 0, EvalSamples = 8, SaveEvery = 0, Seed = 3, Session = new SessionSettings { IntraOpThreads = 1 }, Lora = lora,
        }, [text], SeqLen: 12, ValidationFraction: 0.1, CacheDir: Path.Combine(_dir, "cache"));
    }

    [Fact]
    public void LoraRun_TrainsOnlyAB_StartsAtTheBaseLoss_AndWritesAdapterAndMergedModel()
    {
        var baseRun = TrainingJob.Run(Options("base", 1, null));
        using var job = TrainingJob.Open(Options("lora", 4, Lora));
        var run = job.Lora!;
        var store = job.Trainer.Store;
        var before = store.Export();
        var r = job.Run();

        // B = 0: the adapted model is the base model at the start, so the baseline evaluation and the first step's loss match.
        Assert.Equal(baseRun.Evals[0].ValidationLoss, r.Evals[0].ValidationLoss, 6);
        Assert.Equal(baseRun.History[0].Loss, r.History[0].Loss, 6);

        var lora = run.Modules.SelectMany(m => new[] { m.AName, m.BName }).ToHashSet();
        Assert.Equal(2 * Tiny.NLayer, lora.Count);
        for (int i = 0; i < store.Parameters.Count; i++)
        {
            var name = store.Parameters[i].Name;
            if (lora.Contains(name)) Assert.False(before[i].AsSpan().SequenceEqual(store.Param(i)), $"{name} did not train");
            else Assert.True(before[i].AsSpan().SequenceEqual(store.Param(i)), $"base parameter {name} changed");
        }
        Assert.All(run.Modules, m => Assert.Contains(store.Param(store.Parameters.ToList().FindIndex(p => p.Name == m.BName)).ToArray(), v => v != 0));

        // The adapter round-trips through PEFT's files, and final/ holds the base with it merged.
        var adapterDir = Path.Combine(_dir, "lora", LoraRun.AdapterFolderName);
        Assert.Equal(run.BaseDir, LoraAdapter.ReadConfig(adapterDir).BaseModelNameOrPath);
        var adapter = LoraAdapter.Load(adapterDir, run.Modules);
        var ps = ModelFolder.ReadParameters(run.BaseDir);
        var merged = ps.Select(p => store.Param(store.Parameters.ToList().FindIndex(q => q.Name == p.Name)).ToArray()).ToArray();
        adapter.Merge(ps, merged);
        var final = HfWeights.Load(Path.Combine(_dir, "lora", "final", ModelFolder.WeightsFile), ps, out var unused);
        Assert.Empty(unused);
        for (int i = 0; i < ps.Count; i++) Assert.True(merged[i].AsSpan().SequenceEqual(final[i]), $"final/ {ps[i].Name} is not the merged weight");
        Assert.True(File.Exists(Path.Combine(_dir, "lora", "hf", "model.safetensors")));
    }

    /// <summary>
    /// LoRA with --precision fp16: the graphs are rebuilt from the LoRA-adapted definition (the adapters' products in float16
    /// too), so only A and B train and the losses track the fp32 LoRA run's.
    /// </summary>
    [Fact]
    public void LoraRun_Fp16_RebuildsTheAdaptedGraphs_AndTracksFp32()
    {
        var fp32 = TrainingJob.Run(Options("lora32", 4, Lora));
        var o = Options("lora16", 4, Lora);
        using var job = TrainingJob.Open(o with { Trainer = o.Trainer with { Precision = TrainingPrecision.Fp16, LossScaling = new LossScalerOptions { InitScale = 256 } } });
        Assert.True(job.Trainer.Session.UsesLossScale);
        var store = job.Trainer.Store;
        var before = store.Export();
        var fp16 = job.Run();
        Assert.Equal(0, fp16.SkippedSteps);
        for (int i = 0; i < 4; i++)
            Assert.True(Math.Abs(fp16.History[i].Loss - fp32.History[i].Loss) <= 1e-3 * fp32.History[i].Loss, $"step {i + 1}: {fp16.History[i].Loss} vs {fp32.History[i].Loss}");
        var lora = job.Lora!.Modules.SelectMany(m => new[] { m.AName, m.BName }).ToHashSet();
        for (int i = 0; i < store.Parameters.Count; i++)
            Assert.Equal(lora.Contains(store.Parameters[i].Name), !before[i].AsSpan().SequenceEqual(store.Param(i)));
    }

    [Fact]
    public void LoraOptions_AreValidated()
    {
        var o = Options("v", 1, Lora).Trainer;
        Assert.Throws<ArgumentException>(() => (o with { Lora = Lora with { R = 0 } }).Validate());
        var e = Assert.ThrowsAny<Exception>(() => TrainingJob.Run(Options("none", 1, Lora with { TargetModules = ["no_such_layer"] })));
        Assert.Contains("not found", e.Message);
    }

    [Fact]
    public void LoraRun_ResumesExactly_AndRefusesOtherLoraSettingsOrAFullRun()
    {
        var straight = Options("straight", 6, Lora);
        TrainingJob.Run(straight);
        var split = Options("split", 6, Lora);
        TrainingJob.Run(split with { Trainer = split.Trainer with { StopAfter = 3 } });
        TrainingJob.Run(split with { Trainer = split.Trainer with { Resume = CheckpointRef.Latest } });
        foreach (var file in new[] { LoraAdapter.WeightsFile, LoraAdapter.ConfigFile })
            Assert.Equal(File.ReadAllBytes(Path.Combine(_dir, "straight", LoraRun.AdapterFolderName, file)), File.ReadAllBytes(Path.Combine(_dir, "split", LoraRun.AdapterFolderName, file)));
        Assert.Equal(File.ReadAllBytes(Path.Combine(_dir, "straight", "final", ModelFolder.WeightsFile)), File.ReadAllBytes(Path.Combine(_dir, "split", "final", ModelFolder.WeightsFile)));

        // A checkpoint of A and B cannot tell another alpha apart: the run's settings beside its graphs can.
        var checkpoint = Checkpoints.Latest(Path.Combine(_dir, "split", "checkpoints"))!;
        var other = Options("other", 6, Lora with { LoraAlpha = 16 });
        var e = Assert.Throws<ArgumentException>(() => TrainingJob.Run(other with { Trainer = other.Trainer with { Resume = CheckpointRef.At(checkpoint) } }));
        Assert.Contains("--lora-alpha 8, not 16", e.Message);
        var full = Options("full", 2, null);
        TrainingJob.Run(full with { Trainer = full.Trainer with { StopAfter = 1 } });
        var f = Assert.Throws<InvalidDataException>(() => TrainingJob.Run(full with { Trainer = full.Trainer with { Resume = CheckpointRef.Latest, Lora = Lora } }));
        Assert.Contains("holds no LoRA run", f.Message);
    }

    /// <summary>T5 end to end: LoRA on q and v of a tiny T5 with a symbol tokenizer, through the same job as GPT-2.</summary>
    [Fact]
    public void T5LoraRun_StartsAtTheBase_TrainsOnlyAB_AndTheMergedModelLoadsAndGenerates()
    {
        var rng = new Random(2);
        var pairs = Enumerable.Range(0, 300).Select(_ =>
        {
            var w = new string(Enumerable.Range(0, rng.Next(2, 6)).Select(_ => (char)('a' + rng.Next(8))).ToArray());
            return (Source: w, Target: string.Join(" ", w.Reverse().Select(c => c.ToString().ToUpperInvariant())));
        }).ToArray();
        var tok = SymbolTokenizer.Build(pairs, sourceSplit: "chars", targetSplit: "words");
        var model = Path.Combine(_dir, "t5");
        ModelKinds.Write(model, new T5Config
        {
            VocabSize = tok.VocabSize, DModel = 16, DKv = 8, NumHeads = 2, DFf = 32, NumLayers = 1, NumDecoderLayers = 1,
            RelativeAttentionNumBuckets = 8, RelativeAttentionMaxDistance = 16, DropoutRate = 0, MaxLength = 12,
        });
        tok.Save(model);
        var data = Path.Combine(_dir, "pairs.tsv");
        File.WriteAllLines(data, pairs.Select(p => $"{p.Source}\t{p.Target}"));
        TrainingJobOptions Job(string outDir, long steps, LoraConfig? lora) => new(new TrainerOptions
        {
            ModelDir = model, OutputDir = Path.Combine(_dir, outDir), Steps = steps, BatchSize = 16, Lr = 2e-2, Warmup = 0, Schedule = ScheduleKind.Constant,
            ClipNorm = 0, EvalEvery = 0, EvalSamples = 32, SaveEvery = 0, Seed = 1, Session = new SessionSettings { IntraOpThreads = 1 }, Lora = lora,
        }, [data], ValidationFraction: 0.1);

        var baseRun = TrainingJob.Run(Job("t5-base", 1, null));
        using var job = TrainingJob.Open(Job("t5-lora", 30, new LoraConfig { R = 4, LoraAlpha = 8, TargetModules = ["q", "v"] }));
        var store = job.Trainer.Store;
        var before = store.Export();
        var r = job.Run();
        Assert.Equal(baseRun.Evals[0].ValidationLoss, r.Evals[0].ValidationLoss, 6);
        Assert.True(r.Evals[^1].ValidationLoss < r.Evals[0].ValidationLoss - 0.05, $"validation loss {r.Evals[0].ValidationLoss:F3} -> {r.Evals[^1].ValidationLoss:F3}");
        // Encoder and decoder self-attention and the decoder's cross-attention each have q and v.
        Assert.Equal(2 * 3, job.Lora!.Modules.Count);
        var ab = job.Lora.Modules.SelectMany(m => new[] { m.AName, m.BName }).ToHashSet();
        for (int i = 0; i < store.Parameters.Count; i++)
            Assert.Equal(!ab.Contains(store.Parameters[i].Name), before[i].AsSpan().SequenceEqual(store.Param(i)));

        // The merged model in final/ is a T5 folder like any other: its validation loss is the adapted model's, it loads and generates.
        var mergedRun = TrainingJob.Run(Job("t5-merged", 1, null) with { Trainer = Job("t5-merged", 1, null).Trainer with { ModelDir = Path.Combine(_dir, "t5-lora", "final") } });
        Assert.Equal(r.Evals[^1].ValidationLoss, mergedRun.Evals[0].ValidationLoss, 5);
        using var merged = ModelKinds.Load(Path.Combine(_dir, "t5-lora", "final"));
        var output = merged.Generator!.Complete(pairs[0].Source, new Optimum.Inference.GenerationOptions { MaxNewTokens = 8 });
        Assert.False(string.IsNullOrWhiteSpace(output.Text));
        Assert.True(File.Exists(Path.Combine(_dir, "t5-lora", LoraRun.AdapterFolderName, LoraAdapter.WeightsFile)));
        var adapter = LoraAdapter.ReadConfig(Path.Combine(_dir, "t5-lora", LoraRun.AdapterFolderName));
        Assert.Equal(["q", "v"], adapter.TargetModules);
    }
}

using System.Text.Json.Nodes;
using Optimum.Core;
using Optimum.Data;
using Optimum.Distributed;
using Optimum.Hub;
using Optimum.Models;
using Optimum.Onnx;
using Optimum.Tests;
using Xunit;
using Xunit.Abstractions;

namespace Optimum.Training.Tests;

/// <summary>
/// Frozen parameters (TrainerOptions.Freeze): the frozen run against the same run with a learning rate of 0 for the frozen
/// parameters (and no clipping, whose norm would count their gradients), the graph, the optimizer state, resume and ZeRO-1.
/// </summary>
public sealed class FreezeTests(ITestOutputHelper output) : IDisposable
{
    private readonly string _dir = Repo.TempDir();
    public void Dispose() => Directory.Delete(_dir, true);

    /// <summary>Trainable parameters of a frozen run against the zero-lr run: relative, elementwise, floor 1e-3.</summary>
    private const double Tolerance = 1e-6;

    private static readonly Gpt2Config Tiny = TinyLm.Config();
    /// <summary>Everything but the last block and the final LayerNorm.</summary>
    private static readonly string[] AllButLastBlock = ["transformer.wte", "transformer.wpe", "transformer.h.0"];

    private string Gpt2() => TinyLm.Folder(_dir, Tiny);

    private static LmData LmData() => TinyLm.Data();

    private TrainerOptions Options(string model, string outDir, long steps, OptimizerKind optimizer) => new()
    {
        ModelDir = model, OutputDir = Path.Combine(_dir, outDir), Steps = steps, BatchSize = 6, Lr = 5e-3, Warmup = 2, Schedule = ScheduleKind.Linear,
        ClipNorm = 0, Optimizer = new OptimizerConfig { Kind = optimizer, WeightDecay = 0.1 }, EvalEvery = 0, EvalSamples = 12, SaveEvery = 0, Seed = 5,
        Export = false, Session = new SessionSettings { IntraOpThreads = 1 },
    };

    private static (float[][] Weights, long StateBytes, long StateLength) Train(TrainerOptions o, IBatchSource data, float[][] init) =>
        Train(o, data, init, new HashSet<string>()) is var (w, b, l, _, _) ? (w, b, l) : default;

    /// <summary>Also the last step's gradient norm and the norm of its gradients over the trainable parameters outside <paramref name="frozen"/>.</summary>
    private static (float[][] Weights, long StateBytes, long StateLength, double LastNorm, double NormOutsideFrozen) Train(TrainerOptions o, IBatchSource data, float[][] init, ISet<string> frozen)
    {
        using var t = new Trainer(o, data, init);
        var r = t.Run();
        double sum = 0;
        for (int i = 0; i < t.Store.Parameters.Count; i++)
            if (t.Store.Parameters[i].Trainable && !frozen.Contains(t.Store.Parameters[i].Name))
                foreach (var g in t.Store.Grad(i)) sum += (double)g * g;
        return (t.Store.Export(), t.Optimizer.StateBytes, t.Optimizer.State(0).Length, r.History[^1].GradNorm, Math.Sqrt(sum));
    }

    [Theory]
    [InlineData("transformer.h.*.attn.*", "transformer.h.0.attn.c_attn.weight", true)]
    [InlineData("transformer.h.*.attn", "transformer.h.1.attn.c_proj.bias", true)]
    [InlineData("transformer.h.1", "transformer.h.10.ln_1.weight", false)]
    [InlineData("transformer.h.1", "transformer.h.1.ln_1.weight", true)]
    [InlineData("transformer.wt", "transformer.wte.weight", false)]
    [InlineData("transformer.wt*", "transformer.wte.weight", true)]
    [InlineData("transformer.ln_*", "transformer.ln_f.weight", true)]
    [InlineData("ln_*", "transformer.ln_f.weight", false)]
    [InlineData("**.bias", "transformer.h.0.mlp.c_fc.bias", true)]
    [InlineData("**.bias", "lm_head.weight", false)]
    [InlineData("**.ln_f", "transformer.ln_f.bias", true)]
    [InlineData("transformer.**.weight", "transformer.wte.weight", true)]
    [InlineData("transformer.wte.weight", "transformer.wte.weight", true)]
    [InlineData("Transformer.wte", "transformer.wte.weight", false)]
    public void Patterns_MatchWholeSegmentsGlobsAndModulePrefixes(string pattern, string name, bool matches) =>
        Assert.Equal(matches, Freezing.Matches(pattern, name));

    [Fact]
    public void Resolve_RefusesAPatternMatchingNothing_AndFreezingEverything()
    {
        var ps = ModelFolder.ReadParameters(Gpt2());
        var nothing = Assert.Throws<ArgumentException>(() => Freezing.Resolve(["transformer.h.7"], ps));
        Assert.Contains("'transformer.h.7' matches no trainable parameter", nothing.Message);
        var all = Assert.Throws<ArgumentException>(() => Freezing.Resolve(["transformer", "**.bias"], ps));
        Assert.Contains($"freezes all {ps.Count(p => p.Trainable)} trainable parameters", all.Message);
        Assert.Equal(ps.Where(p => p.Name.StartsWith("transformer.h.0.", StringComparison.Ordinal)).Select(p => p.Name), Freezing.Resolve(["transformer.h.0"], ps));
    }

    [Fact]
    public void FrozenTrainingGraph_HasNoGradientOutputsOrBackwardNodesForFrozenParameters()
    {
        var path = Path.Combine(Gpt2(), ModelFolder.TrainingFile);
        var ps = ModelFolder.ReadParameters(Gpt2());
        var frozen = Freezing.Resolve(AllButLastBlock, ps);
        var full = ModelReader.Load(path);
        var cut = ModelReader.FromBytes(TrainingGraph.Freeze(File.ReadAllBytes(path), frozen));
        Assert.Equal(full.Outputs.Select(o => o.Name).Where(n => !frozen.Any(f => n == TrainingGraph.GradPrefix + f)), cut.Outputs.Select(o => o.Name));
        Assert.Equal(full.Inputs.Select(i => i.Name), cut.Inputs.Select(i => i.Name));                 // frozen parameters stay inputs
        // The backward chain of block 0 and the embeddings is gone: the graph ends its backward pass at block 1's input.
        output.WriteLine($"nodes: {full.Nodes.Count} full, {cut.Nodes.Count} with {frozen.Count} parameters frozen");
        Assert.True(cut.Nodes.Count < full.Nodes.Count - 40, $"{cut.Nodes.Count} nodes of {full.Nodes.Count}");
        Assert.DoesNotContain(cut.Nodes, n => n.Name.StartsWith("grad/", StringComparison.Ordinal) && n.Name.Contains("h.0.", StringComparison.Ordinal));
        var stray = Assert.Throws<GraphBuildException>(() => TrainingGraph.Freeze(File.ReadAllBytes(path), ["transformer.h.9.ln_1.weight"]));
        Assert.Contains("transformer.h.9.ln_1.weight", stray.Message);
    }

    [Theory]
    [InlineData(OptimizerKind.Sgd)]
    [InlineData(OptimizerKind.AdamW)]
    public void Gpt2_FrozenRun_EqualsZeroLrRun_AndHoldsStateForTrainableOnly(OptimizerKind optimizer)
    {
        var ps = ModelFolder.ReadParameters(Gpt2());
        var init = ModelKinds.Initialize(ps, Tiny, 1);
        FrozenEqualsZeroLr(Gpt2(), ps, init, LmData, AllButLastBlock, optimizer, steps: 6);
    }

    /// <summary>
    /// SGD only: the attention key biases' gradient is zero in exact arithmetic (softmax ignores a shift shared by all keys), so
    /// it is rounding noise, which differs between the frozen graph and the full one (ORT fuses the pruned graph differently);
    /// AdamW divides by sqrt(v) and turns that noise into lr-sized steps (4e-4 relative on those biases). GPT-2 checks AdamW.
    /// </summary>
    [Theory]
    [InlineData(OptimizerKind.Sgd)]
    public void TimeSeriesTransformer_FrozenRun_EqualsZeroLrRun(OptimizerKind optimizer)
    {
        var cfg = new TimeSeriesConfig
        {
            ModelType = "time_series_transformer", PredictionLength = 6, ContextLength = 12, LagsSequence = [1, 2, 12], NumTimeFeatures = 2, TimeFeatures = "monthly",
            NumStaticCategoricalFeatures = 1, Cardinality = [14], EmbeddingDimension = [3], DModel = 16, EncoderLayers = 2, DecoderLayers = 1,
            EncoderFfnDim = 16, DecoderFfnDim = 16, Dropout = 0, AttentionDropout = 0, ActivationDropout = 0, EncoderLayerdrop = 0, DecoderLayerdrop = 0,
        };
        var dir = Path.Combine(_dir, "tst");
        ModelKinds.Write(dir, cfg);
        var ps = ModelFolder.ReadParameters(dir);
        var init = ModelKinds.Initialize(ps, cfg, 1);
        TimeSeriesWindows Data() => new(TimeSeriesFiles.ReadVegaUnemployment(Repo.Path("samples", "data", "unemployment-across-industries.json")), cfg.ContextLength,
            cfg.PredictionLength, cfg.LagsSequence, holdout: 12, minPast: cfg.ContextLength, seriesIdAsCategorical: true);
        FrozenEqualsZeroLr(dir, ps, init, Data, ["model.encoder", "model.embedder"], optimizer, steps: 5);
    }

    private void FrozenEqualsZeroLr(string model, IReadOnlyList<ParameterInfo> ps, float[][] init, Func<IBatchSource> data, string[] patterns, OptimizerKind optimizer, int steps)
    {
        var frozen = Freezing.Resolve(patterns, ps).ToHashSet();
        var o = Options(model, "frozen-" + optimizer, steps, optimizer);
        var (cut, bytes, length, norm, _) = Train(o with { Freeze = patterns }, data(), init, frozen);
        var zeroLr = o with { OutputDir = Path.Combine(_dir, "zero-lr-" + optimizer), Optimizer = o.Optimizer with { LrScales = frozen.ToDictionary(f => f, _ => 0.0) } };
        var (reference, fullBytes, _, fullNorm, referenceNorm) = Train(zeroLr, data(), init, frozen);
        // The gradient norm (what clipping scales by) counts the trainable parameters only.
        output.WriteLine($"last gradient norm: {norm:G9} frozen run, {referenceNorm:G9} over the same parameters of the zero-lr run, {fullNorm:G9} over all");
        Assert.Equal(referenceNorm, norm, referenceNorm * 1e-5);
        Assert.True(fullNorm > norm, $"the full norm {fullNorm} should exceed the trainable one {norm}");

        long trainable = ps.Where(p => p.Trainable && !frozen.Contains(p.Name)).Sum(p => p.Count);
        int states = optimizer == OptimizerKind.AdamW ? 2 : 1;
        Assert.Equal(trainable, length);
        Assert.Equal(states * trainable * sizeof(float), bytes);
        output.WriteLine($"{Path.GetFileName(model)} {optimizer}: {frozen.Count} tensors frozen; state {bytes} bytes frozen vs {fullBytes} full");
        double moved = 0, worst = 0;
        for (int i = 0; i < ps.Count; i++)
        {
            if (frozen.Contains(ps[i].Name))
            {
                Assert.Equal(init[i], cut[i]);                                                   // bit-identical to the base
                Assert.Equal(init[i], reference[i]);
                continue;
            }
            if (!ps[i].Trainable) continue;
            moved = Math.Max(moved, Diff.MaxRelative([init[i]], [cut[i]], floor: 1e-3));
            worst = Math.Max(worst, Diff.MaxRelative([reference[i]], [cut[i]], floor: 1e-3));
            if (Diff.MaxRelative([reference[i]], [cut[i]], floor: 1e-3) > Tolerance) output.WriteLine($"  {ps[i].Name}: {Diff.MaxRelative([reference[i]], [cut[i]], floor: 1e-3):E2}");
        }
        output.WriteLine($"trainable: moved {moved:E2}, frozen run vs zero-lr run {worst:E2}");
        Assert.True(moved > 1e-3, $"the trainable parameters did not move ({moved:E2})");
        Assert.True(worst <= Tolerance, $"frozen run and zero-lr run differ by {worst:E2} (relative)");
    }

    [Fact]
    public void FrozenRun_ResumesExactly_StoresOnlyWhatChanges_RefusesOtherBaseWeights_AndExportsTheFullModel()
    {
        var ps = ModelFolder.ReadParameters(Gpt2());
        var init = ModelKinds.Initialize(ps, Tiny, 1);
        var frozen = Freezing.Resolve(AllButLastBlock, ps).ToHashSet();
        var o = Options(Gpt2(), "straight", 8, OptimizerKind.AdamW) with { Freeze = AllButLastBlock, ClipNorm = 0.5, Export = true };
        var (straight, _, _) = Train(o, LmData(), init);
        var split = o with { OutputDir = Path.Combine(_dir, "split"), Export = false };
        Train(split with { StopAfter = 4 }, LmData(), init);
        var checkpoint = Checkpoints.Latest(Path.Combine(split.OutputDir, "checkpoints"))!;
        var (resumed, _, _) = Train(split with { Resume = CheckpointRef.Latest }, LmData(), init);
        for (int i = 0; i < ps.Count; i++) Assert.Equal(straight[i], resumed[i]);

        // The checkpoint holds the trainable weights and their state; the frozen ones only as a checksum.
        using (var weights = SafeTensorsFile.Open(Path.Combine(checkpoint, ModelFolder.WeightsFile)))
            Assert.Equal(ps.Where(p => !frozen.Contains(p.Name)).Select(p => p.Name).Order(StringComparer.Ordinal), weights.Names.Order(StringComparer.Ordinal));
        using (var state = SafeTensorsFile.Open(Path.Combine(checkpoint, Checkpoints.OptimizerFile)))
            Assert.DoesNotContain(state.Names, n => frozen.Any(f => n.EndsWith("." + f, StringComparison.Ordinal)));
        var saved = Checkpoints.ReadState(checkpoint);
        Assert.Equal(ps.Where(p => frozen.Contains(p.Name)).Select(p => p.Name), saved.Frozen);
        Assert.Matches("^[0-9a-f]{64}$", saved.FrozenSha256!);

        // final/ holds the full model: the frozen weights are the base's.
        var exported = HfWeights.Load(Path.Combine(o.OutputDir, "final", ModelFolder.WeightsFile), ps, out _);
        for (int i = 0; i < ps.Count; i++) Assert.Equal(frozen.Contains(ps[i].Name) ? init[i] : straight[i], exported[i]);

        // Another base model under the same checkpoint is refused, naming the frozen weights.
        var other = init.Select(w => (float[])w.Clone()).ToArray();
        other[ps.Select((p, i) => (p, i)).First(x => frozen.Contains(x.p.Name)).i][0] += 1e-3f;
        var e = Assert.Throws<InvalidDataException>(() => Train(split with { Resume = CheckpointRef.At(checkpoint), Overwrite = false }, LmData(), other));
        Assert.Contains("base weights", e.Message);
        Assert.Contains(saved.FrozenSha256!, e.Message);
        // So is another frozen set.
        var set = Assert.Throws<InvalidDataException>(() => Train(split with { Resume = CheckpointRef.At(checkpoint), Freeze = ["transformer.wte"] }, LmData(), init));
        Assert.Contains("frozen parameters", set.Message);
    }

    [Fact]
    public void Zero1_TwoRanksMatchOneRank_WithFrozenParameters()
    {
        var ps = ModelFolder.ReadParameters(Gpt2());
        var init = ModelKinds.Initialize(ps, Tiny, 1);
        (float[][] Weights, long[] Bytes, TrainResult R) Run(int ranks) =>
            Unpack(new InProcessWorld(ranks).Run(c =>
            {
                var o = Options(Gpt2(), $"zero{ranks}", 8, OptimizerKind.Sgd) with { BatchSize = 6 / ranks, ClipNorm = 0.3, Freeze = AllButLastBlock };
                using var t = new Trainer(o, LmData(), init, c);
                var r = t.Run();
                return (t.Store.Export(), t.Optimizer.StateBytes, r);
            }));
        static (float[][], long[], TrainResult) Unpack(IReadOnlyList<(float[][] W, long B, TrainResult R)> runs) =>
            (runs[0].W, runs.Select(x => x.B).ToArray(), runs[0].R);
        var (one, oneBytes, oneResult) = Run(1);
        var (two, twoBytes, _) = Run(2);
        long trainable = ps.Where(p => !AllButLastBlock.Any(f => Freezing.Matches(f, p.Name))).Sum(p => p.Count);
        Assert.Equal([trainable * 4], oneBytes);
        Assert.All(twoBytes, b => Assert.Equal((trainable + 1) / 2 * 4, b));
        Assert.True(oneResult.History.Any(m => m.GradNorm > 0.3), "clipping never engaged");
        double diff = Diff.MaxRelative(one, two, floor: 1e-3);
        output.WriteLine($"1 vs 2 ranks: {diff:E2}; state {oneBytes[0]} vs {twoBytes[0]} bytes per rank");
        Assert.True(diff <= 1e-6, $"1 and 2 ranks differ by {diff:E2}");
        for (int i = 0; i < ps.Count; i++)
            if (AllButLastBlock.Any(f => Freezing.Matches(f, ps[i].Name))) Assert.Equal(init[i], two[i]);
    }
}

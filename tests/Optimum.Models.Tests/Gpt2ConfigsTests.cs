using Optimum.Hub;
using Optimum.Models;
using Optimum.Onnx;
using Optimum.Tests;
using Xunit;
using Xunit.Abstractions;
using Optimum.Core;

namespace Optimum.Models.Tests;

/// <summary>GPT-2 configs other than the fixture's: gradients against finite differences, cache against full forward, exports.</summary>
public sealed class Gpt2ConfigsTests(ITestOutputHelper output)
{
    private static readonly Gpt2Config TiedGeluNew = new()
    {
        VocabSize = 23, NPositions = 12, NEmbd = 8, NLayer = 2, NHead = 2, NInner = 12,
        EmbdPdrop = 0, AttnPdrop = 0, ResidPdrop = 0, InitializerRange = 0.3,
    };

    private static readonly Gpt2Config UntiedQuickGelu = TiedGeluNew with
    {
        NLayer = 3, NInner = 6, ActivationFunction = "quick_gelu", TieWordEmbeddings = false,
        ScaleAttnWeights = false, ScaleAttnByInverseLayerIdx = true, LayerNormEpsilon = 1e-3,
    };

    private static readonly Gpt2Config WideRelu = new()
    {
        VocabSize = 97, NPositions = 32, NEmbd = 24, NLayer = 2, NHead = 3, ActivationFunction = "relu",
        EmbdPdrop = 0, AttnPdrop = 0, ResidPdrop = 0, InitializerRange = 0.2, TieWordEmbeddings = false,
    };

    public static TheoryData<string> FdConfigs() => ["tied-gelu_new", "untied-quick_gelu"];

    /// <summary>Weights with every tensor random (LayerNorm weights around 1) so that no gradient is trivially zero.</summary>
    private static float[][] RandomWeights(IReadOnlyList<ParameterInfo> ps, int seed)
    {
        var rng = new Random(seed);
        return ps.Select(p => Enumerable.Range(0, (int)p.Count).Select(_ => (float)((p.Name.Contains(".ln_") && p.Name.EndsWith("weight") ? 1 : 0) + 0.3 * Rand.Normal(rng))).ToArray()).ToArray();
    }

    [Theory]
    [MemberData(nameof(FdConfigs))]
    public void TrainingGradients_MatchFiniteDifferences_InDouble(string which)
    {
        var cfg = which == "tied-gelu_new" ? TiedGeluNew : UntiedQuickGelu;
        var probe = new Gpt2Harness(cfg, type: DType.Double);
        using var h = new Gpt2Harness(cfg, RandomWeights(probe.Parameters, 11), type: DType.Double);
        long[] ids = [3, 17, 5, 22, 9, 0, 14, 14, 2, 7];
        long[] mask = [1, 1, 1, 1, 1, 1, 1, 1, 0, 0];                // right padding in row 1
        long[] labels = [3, 17, 5, 22, 9, 0, 14, -100, -100, -100];
        var feeds = h.LmFeeds(ids, 2, mask, labels);
        var analytic = h.TrainModel.Run(feeds);
        var w = h.Weights.Select(a => a.Select(f => (double)f).ToArray()).ToArray();
        double Loss()
        {
            for (int i = 0; i < h.Parameters.Count; i++) feeds[h.Parameters[i].Name] = new HostTensor(w[i], h.Parameters[i].Shape, DType.Double);
            return h.EvalModel.Run(feeds, ["loss"])["loss"][0];
        }
        var (maxAbs, n) = SampledGradCheck.Run(h.Parameters, w, analytic, Loss, perTensor: 6, new Random(5));
        output.WriteLine($"GPT-2 {which}: {n} gradient elements, max |analytic - fd| = {maxAbs:E2}");
        Assert.Equal(!cfg.TieWordEmbeddings, h.Parameters.Any(p => p.Name == "lm_head.weight"));
    }

    [Fact]
    public void TrainingGraph_LossReadsTheVocabularyOnlyToNormaliseExponentiateAndScatter()
    {
        using var h = new Gpt2Harness(WideRelu);
        // The head's products and views (Transposes: of the transposed weight, which ORT cancels, and of dWᵀ),
        // LogSoftmax and the label pick; backward exp(log p) with -1 scattered at the labels in place, the per-row
        // scale moved to the head's (tokens, width) operands: no one-hot, no sum, difference or scaling over (tokens, vocab).
        Assert.Equal(["Exp", "LogSoftmax", "MatMul", "NegativeLogLikelihoodLoss", "Reshape", "ScatterElements", "Transpose"],
            GraphChecks.OpsReadingVocabWide(h.Training, WideRelu.VocabSize));
    }

    [Fact]
    public void Decoder_BatchOfPromptsOfDifferentLengths_MatchesEachPromptAlone()
    {
        var probe = new Gpt2Harness(WideRelu);
        using var h = new Gpt2Harness(WideRelu, RandomWeights(probe.Parameters, 3));
        long[][] prompts = [[5, 61, 2], [40, 7, 7, 93, 11, 0]];
        int V = WideRelu.VocabSize, T = 6, steps = 4;
        // Left-padded batch, positions counting real tokens only (HF: cumsum(mask) - 1).
        var ids = prompts.SelectMany(p => Enumerable.Repeat(0L, T - p.Length).Concat(p)).ToArray();
        var mask = prompts.SelectMany(p => Enumerable.Repeat(0L, T - p.Length).Concat(Enumerable.Repeat(1L, p.Length))).ToList();
        var pos = prompts.SelectMany(p => Enumerable.Repeat(0L, T - p.Length).Concat(Enumerable.Range(0, p.Length).Select(i => (long)i))).ToArray();
        var (logits, past) = h.Step(ids, 2, [.. mask], pos, null);
        var seqs = prompts.Select(p => p.ToList()).ToArray();
        double maxAbs = 0;
        for (int s = 0; s < steps; s++)
        {
            var next = new long[2];
            for (int b = 0; b < 2; b++)
            {
                var rowLogits = logits.AsSpan(((b + 1) * (logits.Length / 2 / V) - 1) * V, V).ToArray();
                // Reference: the sequence alone through the eval graph (full forward, no cache, no padding).
                var alone = h.EvalModel.Run(h.LmFeeds([.. seqs[b]], 1), ["logits"])["logits"];
                var expected = alone.AsSpan(alone.Length - V, V).ToArray().Select(d => (float)d).ToArray();
                maxAbs = Math.Max(maxAbs, Compare.Check($"step {s} row {b}", rowLogits, expected, 1e-4, 0).MaxAbs);
                next[b] = Compare.ArgMax(rowLogits);
                seqs[b].Add(next[b]);
            }
            mask.InsertRange(mask.Count / 2, [1L]);
            mask.Add(1);
            (logits, past) = h.Step(next, 2, [.. mask], [seqs[0].Count - 1, seqs[1].Count - 1], past);
        }
        output.WriteLine($"padded batch with cache vs each prompt alone: max |logit diff| = {maxAbs:E2}");
    }

    [Fact]
    public void TrainingGraph_WithDropout_RunsAndEvalGraphHasNone()
    {
        var cfg = WideRelu with { EmbdPdrop = 0.1, AttnPdrop = 0.1, ResidPdrop = 0.2 };
        using var h = new Gpt2Harness(cfg);
        // Seeded dropout: masks are hashes of the dropout_seed input (Mod nodes), absent from eval and inference.
        Assert.Contains(h.Training.Inputs, i => i.Name == GraphInputs.DropoutSeed);
        Assert.Equal(5 * (1 + 3 * cfg.NLayer), h.Training.Nodes.Count(n => n.OpType == "Mod"));   // 5 per dropout site
        Assert.DoesNotContain(h.Eval.Nodes, n => n.OpType is "Mod" or "Dropout");
        Assert.DoesNotContain(h.Decoder.Nodes, n => n.OpType is "Mod" or "Dropout");
        var feeds = h.LmFeeds([1, 2, 3, 4, 5, 6], 2);
        double LossWithSeed(long seed)
        {
            feeds[GraphInputs.DropoutSeed] = new HostTensor([seed], [], DType.Int64);
            return h.TrainModel.Run(feeds)["loss"][0];
        }
        var a = LossWithSeed(1);
        Assert.InRange(a, 0.5 * Math.Log(97), 2 * Math.Log(97));
        Assert.Equal(a, LossWithSeed(1));          // same seed, same masks
        Assert.NotEqual(a, LossWithSeed(2));
    }

    [Fact]
    public void ExportAndImport_RoundTripHuggingFaceFoldersByteForByte()
    {
        var fixture = Repo.Fixture("gpt2-tiny");
        var tmp = Repo.TempDir();
        try
        {
            var art = Path.Combine(tmp, "artifacts");
            Assert.Empty(ModelKinds.Export(fixture, art));
            foreach (var f in new[] { "config.json", "training.onnx", "eval.onnx", "inference.onnx", "model.safetensors" })
                Assert.True(File.Exists(Path.Combine(art, f)), f);
            // Our checkpoint of HF's weights is HF's file, byte for byte.
            Assert.Equal(File.ReadAllBytes(Path.Combine(fixture, "model.safetensors")), File.ReadAllBytes(Path.Combine(art, "model.safetensors")));

            var cfg = Gpt2Config.FromHf(HfConfig.Load(Path.Combine(art, "config.json")));
            var ps = Artifacts.ReadParameters(art);
            var weights = HfWeights.Load(Path.Combine(art, "model.safetensors"), ps, out _);
            var hf = Path.Combine(tmp, "hf");
            ModelKinds.ExportHf(hf, cfg, ps, weights);
            Assert.Equal(File.ReadAllBytes(Path.Combine(fixture, "model.safetensors")), File.ReadAllBytes(Path.Combine(hf, "model.safetensors")));
            var back = HfConfig.Load(Path.Combine(hf, "config.json"));
            Assert.Null(back.Json["optimum"]);
            Assert.Equal(cfg with { Source = null }, Gpt2Config.FromHf(back) with { Source = null });
            Assert.Equal("GPT2LMHeadModel", back.Json["architectures"]![0]!.GetValue<string>());
            Assert.Equal("5.17.0", back.Json["transformers_version"]!.GetValue<string>());   // unknown keys kept
        }
        finally { Directory.Delete(tmp, true); }
    }

    [Fact]
    public void UntiedExport_StoresLmHead_AndLoadChecksShapes()
    {
        var tmp = Repo.TempDir();
        try
        {
            var probe = new Gpt2Harness(UntiedQuickGelu);
            ModelKinds.ExportHf(tmp, UntiedQuickGelu, probe.Parameters, probe.Weights);
            using (var f = SafeTensorsFile.Open(Path.Combine(tmp, "model.safetensors")))
                Assert.Contains("lm_head.weight", f.Names);
            var wider = new Gpt2Harness(UntiedQuickGelu with { NEmbd = 10 });
            var e = Assert.Throws<InvalidDataException>(() => HfWeights.Load(Path.Combine(tmp, "model.safetensors"), wider.Parameters, out _));
            Assert.Contains("tensor 'transformer.wte.weight' has shape [23, 8], the model needs [23, 10]", e.Message);
            var tied = new Gpt2Harness(UntiedQuickGelu with { TieWordEmbeddings = true });
            HfWeights.Load(Path.Combine(tmp, "model.safetensors"), tied.Parameters, out var unused);
            Assert.Equal(["lm_head.weight"], unused);
        }
        finally { Directory.Delete(tmp, true); }
    }

    [Theory]
    [InlineData("{\"model_type\": \"gpt2\", \"activation_function\": \"tanh\"}", "activation_function=tanh is not supported")]
    [InlineData("{\"model_type\": \"gpt2\", \"n_embd\": 10, \"n_head\": 4}", "n_embd=10 is not supported; expected a positive multiple of n_head (4)")]
    [InlineData("{\"model_type\": \"gpt2\", \"add_cross_attention\": true}", "add_cross_attention=true")]
    [InlineData("{\"model_type\": \"t5\"}", "model_type 't5' is not gpt2")]
    [InlineData("{\"model_type\": \"gpt2\", \"attn_pdrop\": 1.5}", "attn_pdrop=1.5 is not supported")]
    [InlineData("{\"model_type\": \"gpt2\", \"n_layer\": 2.5}", "'n_layer' is 2.5, expected an integer")]
    public void UnsupportedConfigs_AreRefusedWithTheField(string json, string expected)
    {
        var e = Assert.Throws<InvalidDataException>(() => Gpt2Config.FromHf(HfConfig.Parse(json, "config.json")));
        Assert.Contains(expected, e.Message);
        Assert.StartsWith("config.json", e.Message);
    }

    [Fact]
    public void Initialize_FollowsHuggingFaceScheme()
    {
        var c = new Gpt2Config { VocabSize = 300, NPositions = 32, NEmbd = 64, NLayer = 8, NHead = 4 };
        var h = new Gpt2Harness(c, seed: 9);
        double Std(string name) { var w = h.Weights[h.Parameters.ToList().FindIndex(p => p.Name == name)]; return Math.Sqrt(w.Average(x => (double)x * x)); }
        Assert.InRange(Std("transformer.wte.weight"), 0.019, 0.021);
        Assert.InRange(Std("transformer.h.0.mlp.c_fc.weight"), 0.019, 0.021);
        Assert.InRange(Std("transformer.h.3.mlp.c_proj.weight"), 0.02 / 4 * 0.95, 0.02 / 4 * 1.05);   // 0.02 / sqrt(2 * 8)
        Assert.All(h.Weights[h.Parameters.ToList().FindIndex(p => p.Name == "transformer.h.1.ln_2.weight")], w => Assert.Equal(1f, w));
        Assert.All(h.Weights[h.Parameters.ToList().FindIndex(p => p.Name == "transformer.h.1.attn.c_attn.bias")], w => Assert.Equal(0f, w));
        Assert.Equal(h.Weights[0], new Gpt2Harness(c, seed: 9).Weights[0]);
    }
}

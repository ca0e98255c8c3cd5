using Optimum.Hub.Lora;
using Optimum.Onnx.Lora;
using Optimum.Tests;
using Optimum.Core;
using Optimum.Hub;
using Optimum.Onnx;
using Xunit;
using Xunit.Abstractions;

namespace Optimum.Models.Tests;

public sealed class LoraTests(ITestOutputHelper output)
{
    private static readonly Gpt2Config Gpt2Tiny = new() { VocabSize = 61, NPositions = 16, NEmbd = 16, NLayer = 2, NHead = 2 };
    private static readonly T5Config T5Tiny = new()
    {
        VocabSize = 17, DModel = 8, DKv = 4, NumHeads = 2, DFf = 6, NumLayers = 2, NumDecoderLayers = 2, RelativeAttentionNumBuckets = 6,
        RelativeAttentionMaxDistance = 9, FeedForwardProj = "gated-gelu", TieWordEmbeddings = false, DropoutRate = 0.1,
    };

    private static Func<GraphBuilder, bool, ModelOutputs> Gpt2(Gpt2Config c, DType t = DType.Float) => (g, training) => Models.Gpt2.DefineLm(g, training, c, t);
    private static Func<GraphBuilder, bool, ModelOutputs> T5(T5Config c, DType t = DType.Float) => (g, training) => Models.T5.DefineLm(g, training, c, t);

    private static Dictionary<string, HostTensor> Gpt2Batch() => new()
    {
        ["input_ids"] = LoraHarness.Ids([3, 17, 42, 5, 9, 60, 1, 0, 33, 12, 7, 8], 2, 6),
        ["attention_mask"] = LoraHarness.Ids([1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0], 2, 6),
        ["labels"] = LoraHarness.Ids([3, 17, 42, 5, 9, 60, 1, 0, 33, 12, -100, -100], 2, 6),
    };

    private static Dictionary<string, HostTensor> T5Batch() => new()
    {
        ["input_ids"] = LoraHarness.Ids([3, 5, 7, 2, 9, 11, 4, 8, 6, 0], 2, 5),
        ["attention_mask"] = LoraHarness.Ids([1, 1, 1, 1, 1, 1, 1, 1, 1, 0], 2, 5),
        ["labels"] = LoraHarness.Ids([4, 9, 2, 1, 5, 1, -100, -100], 2, 4),
    };

    private static LoraHarness Harness(string kind, LoraConfig lora, DType type = DType.Float) => kind == "gpt2"
        ? new LoraHarness(Gpt2Tiny, Gpt2(Gpt2Tiny, type), lora, type)
        : new LoraHarness(T5Tiny, T5(T5Tiny, type), lora, type);

    private static Dictionary<string, HostTensor> Batch(string kind) => kind == "gpt2" ? Gpt2Batch() : T5Batch();

    public static TheoryData<string> Kinds => new() { "gpt2", "t5" };

    private static LoraConfig AllLinear(string kind, int r = 4) => new()
    {
        R = r, LoraAlpha = 2 * r, LoraDropout = 0.1,
        TargetModules = kind == "gpt2" ? ["c_attn", "c_proj", "c_fc"] : ["q", "k", "v", "o", "wi_0", "wi_1", "wo"],
    };

    [Theory]
    [MemberData(nameof(Kinds))]
    public void ZeroB_LogitsAndLossEqualTheBaseExactly(string kind)
    {
        var h = Harness(kind, AllLinear(kind));
        Assert.True(h.Modules.Count >= 4, $"{h.Modules.Count} modules adapted");
        var adapter = LoraAdapter.Initialize(h.Lora, h.Modules, seed: 3);   // PEFT's init: A random, B = 0
        Assert.Contains(adapter.A(0), v => v != 0);
        var b = h.RunBase(Batch(kind));
        var l = h.RunAdapted(Batch(kind), adapter);
        Assert.Equal(b["loss"], l["loss"]);
        Assert.Equal(b["logits"], l["logits"]);
        // Nonzero B changes the output: the comparison above can fail.
        var moved = h.RunAdapted(Batch(kind), h.Adapter(seed: 3, bStd: 0.1));
        Assert.NotEqual(b["loss"][0], moved["loss"][0]);
    }

    [Fact]
    public void Modules_FollowPeftsTargetRule_AndKnowTheirLayout()
    {
        var gpt2 = Harness("gpt2", new LoraConfig { R = 2, TargetModules = ["c_attn", "mlp.c_proj"] });
        Assert.Equal(["transformer.h.0.attn.c_attn", "transformer.h.0.mlp.c_proj", "transformer.h.1.attn.c_attn", "transformer.h.1.mlp.c_proj"],
            gpt2.Modules.Select(m => m.Name));
        Assert.All(gpt2.Modules, m => Assert.True(m.FanInFanOut));                       // Conv1D: W stored (in, out)
        Assert.Equal((16L, 48L), (gpt2.Modules[0].In, gpt2.Modules[0].Out));
        Assert.Equal((64L, 16L), (gpt2.Modules[1].In, gpt2.Modules[1].Out));
        var t5 = Harness("t5", new LoraConfig { R = 2, TargetModulesRegex = @"decoder\.block\.\d+\.layer\.1\.EncDecAttention\.(q|v)" });
        Assert.Equal(["decoder.block.0.layer.1.EncDecAttention.q", "decoder.block.0.layer.1.EncDecAttention.v",
            "decoder.block.1.layer.1.EncDecAttention.q", "decoder.block.1.layer.1.EncDecAttention.v"], t5.Modules.Select(m => m.Name).Order(StringComparer.Ordinal));
        Assert.All(t5.Modules, m => Assert.False(m.FanInFanOut));                        // nn.Linear: W stored (out, in)
        Assert.Equal((8L, 8L), (t5.Modules[0].In, t5.Modules[0].Out));
        // "q" as a suffix needs the dot: "EncDecAttention.q" matches, a module ending in "...xq" would not.
        Assert.True(new LoraConfig { TargetModules = ["q"] }.Matches("encoder.block.0.layer.0.SelfAttention.q"));
        Assert.False(new LoraConfig { TargetModules = ["q"] }.Matches("encoder.block.0.layer.0.SelfAttention.xq"));
        Assert.False(new LoraConfig { TargetModulesRegex = "q" }.Matches("encoder.block.0.layer.0.SelfAttention.q"));   // regex: full match
        // A regex may match LoRA's own modules too ("...c_attn.lora_A"): they are not base layers and are left alone.
        var wide = Harness("gpt2", new LoraConfig { R = 2, TargetModulesRegex = @".*\.c_attn(\.lora_[AB])?" });
        Assert.Equal(2, wide.Modules.Count);
    }

    [Fact]
    public void ParameterCount_R8OnCAttnOfGpt2Mini_IsTheClosedForm()
    {
        var c = Gpt2Kind.Mini;
        var g = TrainingGraph.BuildEval("lora", LoraGraph.Apply(Gpt2(c), new LoraConfig { R = 8, LoraAlpha = 16, TargetModules = ["c_attn"] }));
        var lora = g.Parameters.Where(p => p.Name.Contains(".lora_", StringComparison.Ordinal)).ToArray();
        long count = lora.Sum(p => p.Shape.ToStatic().Aggregate(1L, (a, b) => a * b));
        long closedForm = c.NLayer * 8L * (c.NEmbd + 3L * c.NEmbd);                       // layers · r · (in + out)
        Assert.Equal(2 * c.NLayer, lora.Length);
        Assert.Equal(closedForm, count);
        Assert.Equal(16384, count);
        Assert.Equal(closedForm, LoraAdapter.Initialize(new LoraConfig { R = 8, TargetModules = ["c_attn"] }, LoraGraph.Modules(g), 0).ParameterCount);
        Assert.Equal([8L, 128L], g.Parameters.Single(p => p.Name == "transformer.h.0.attn.c_attn.lora_A.weight").Shape.ToStatic());
        Assert.Equal([384L, 8L], g.Parameters.Single(p => p.Name == "transformer.h.0.attn.c_attn.lora_B.weight").Shape.ToStatic());
        // What a LoRA run trains is exactly A and B: everything else is frozen.
        var frozen = LoraGraph.FrozenParameters(g);
        Assert.Equal(g.TrainableParameters.Count - lora.Length, frozen.Count);
        Assert.DoesNotContain(frozen, n => n.Contains(".lora_", StringComparison.Ordinal));
        Assert.Contains("transformer.h.0.attn.c_attn.weight", frozen);
    }

    [Theory]
    [MemberData(nameof(Kinds))]
    public void Gradients_OfAAndB_MatchFiniteDifferences_InDouble_WithLoraDropout(string kind)
    {
        var lora = AllLinear(kind, r: 2) with { LoraDropout = 0.25 };
        var h = Harness(kind, lora, DType.Double);
        var train = TrainingGraph.BuildTraining("lora", LoraGraph.Apply(h.Define, lora));
        var adapter = h.Adapter(seed: 5, bStd: 0.3);
        var ps = adapter.Tensors.Select(t => t.Parameter).ToArray();
        var w = adapter.Tensors.Select(t => t.Values.Select(v => (double)v).ToArray()).ToArray();
        var feeds = Batch(kind);
        feeds[GraphInputs.DropoutSeed] = new HostTensor([1234], [], DType.Int64);
        foreach (var (p, i) in h.BaseParameters.Select((p, i) => (p, i)))
            feeds[p.Name] = new HostTensor(h.BaseWeights[i].Select(v => (double)v).ToArray(), p.Shape, DType.Double);
        void Bind() { for (int i = 0; i < ps.Length; i++) feeds[ps[i].Name] = new HostTensor(w[i], ps[i].Shape, DType.Double); }
        Bind();
        using var model = new OrtModel(train);
        var analytic = model.Run(feeds);
        Assert.Contains(analytic["grad." + ps[0].Name], v => v != 0);
        // The training graph's loss (same dropout seed, so the same masks) as the function differentiated.
        var (maxAbs, n) = SampledGradCheck.Run(ps, w, analytic, () => { Bind(); return model.Run(feeds, ["loss"])["loss"][0]; }, perTensor: 4, new Random(7));
        output.WriteLine($"{kind}: {n} LoRA gradient elements over {ps.Length} tensors, max |analytic - fd| = {maxAbs:E2}");
    }

    [Theory]
    [MemberData(nameof(Kinds))]
    public void PlainSgd_OnAAndBAlone_LowersTheLoss(string kind)
    {
        var lora = AllLinear(kind) with { LoraDropout = 0 };
        var h = Harness(kind, lora);
        var train = TrainingGraph.BuildTraining("lora", LoraGraph.Apply(h.Define, lora));
        var adapter = LoraAdapter.Initialize(lora, h.Modules, seed: 1);
        var feeds = Batch(kind);
        feeds[GraphInputs.DropoutSeed] = new HostTensor([7], [], DType.Int64);
        using var model = new OrtModel(train);
        double first = 0, last = 0;
        for (int step = 0; step < 30; step++)
        {
            foreach (var (p, i) in h.BaseParameters.Select((p, i) => (p, i)))
                feeds[p.Name] = new HostTensor(h.BaseWeights[i].Select(v => (double)v).ToArray(), p.Shape, DType.Float);
            foreach (var (p, v) in adapter.Tensors) feeds[p.Name] = new HostTensor(v.Select(x => (double)x).ToArray(), p.Shape, DType.Float);
            var r = model.Run(feeds);
            if (step == 0) first = r["loss"][0];
            last = r["loss"][0];
            foreach (var (p, v) in adapter.Tensors)
            {
                var g = r["grad." + p.Name];
                for (int k = 0; k < v.Length; k++) v[k] -= (float)(0.5 * g[k]);
            }
        }
        output.WriteLine($"{kind}: loss {first:F4} -> {last:F4} after 30 SGD steps on A and B ({adapter.ParameterCount} values), base frozen");
        Assert.True(last < first - 0.1, $"loss {first} -> {last}");
    }

    [Theory]
    [MemberData(nameof(Kinds))]
    public void Merged_EqualsTheAdapterModel_AndUnmergeRestoresTheBase(string kind)
    {
        var h = Harness(kind, AllLinear(kind));
        var adapter = h.Adapter(seed: 11, bStd: 0.2);
        var withAdapter = h.RunAdapted(Batch(kind), adapter);
        var merged = h.BaseWeights.Select(w => w.ToArray()).ToArray();
        adapter.Merge(h.BaseParameters, merged);
        var mergedOut = h.RunBase(Batch(kind), merged);
        var baseOut = h.RunBase(Batch(kind));
        double moved = withAdapter["logits"].Zip(baseOut["logits"], (a, b) => Math.Abs(a - b)).Max();
        Assert.True(moved > 1e-3, $"the adapter moves the logits by only {moved:E2}");
        Compare.Check("merged logits", mergedOut["logits"], withAdapter["logits"].Select(v => (float)v).ToArray(), atol: 1e-5, rtol: 1e-5);
        Compare.Check("merged loss", mergedOut["loss"], [(float)withAdapter["loss"][0]], atol: 1e-5, rtol: 1e-5);
        adapter.Unmerge(h.BaseParameters, merged);
        for (int i = 0; i < merged.Length; i++)
            Compare.Check(h.BaseParameters[i].Name, merged[i].Select(v => (double)v).ToArray(), h.BaseWeights[i], atol: 1e-6, rtol: 0);
    }

    [Fact]
    public void PeftAdapter_WrittenByHand_LoadsAndGivesTheMergedOutput()
    {
        var dir = Repo.TempDir();
        File.WriteAllText(Path.Combine(dir, LoraAdapter.ConfigFile), PeftConfigJson(r: 4, alpha: 32, targets: "[\"c_attn\"]"));
        var rng = new Random(21);
        var tensors = new List<SafeTensor>();
        var expectedDelta = new Dictionary<string, (float[] A, float[] B)>();
        for (int layer = 0; layer < Gpt2Tiny.NLayer; layer++)
        {
            var m = $"transformer.h.{layer}.attn.c_attn";
            float[] a = HfWeights.Normal(rng, 4 * 16, 0.3), b = HfWeights.Normal(rng, 48 * 4, 0.3);
            tensors.Add(SafeTensor.FromFloats($"base_model.model.{m}.lora_A.weight", a, 4, 16));
            tensors.Add(SafeTensor.FromFloats($"base_model.model.{m}.lora_B.weight", b, 48, 4));
            expectedDelta[m + ".weight"] = (a, b);
        }
        SafeTensorsFile.Write(Path.Combine(dir, LoraAdapter.WeightsFile), tensors, new Dictionary<string, string> { ["format"] = "pt" });

        var config = LoraAdapter.ReadConfig(dir);
        Assert.Equal((4, 32.0, 0.05, true, "CAUSAL_LM"), (config.R, config.LoraAlpha, config.LoraDropout, config.FanInFanOut, config.TaskType));
        var h = new LoraHarness(Gpt2Tiny, Gpt2(Gpt2Tiny), config);
        var adapter = LoraAdapter.Load(dir, h.Modules);
        var got = h.RunAdapted(Gpt2Batch(), adapter);

        // Expected by hand: Conv1D's W (in, out) plus 32/4 · (B·A)ᵀ.
        var merged = h.BaseParameters.Select((p, i) =>
        {
            var w = h.BaseWeights[i].ToArray();
            if (expectedDelta.TryGetValue(p.Name, out var d))
                for (int inF = 0; inF < 16; inF++)
                    for (int outF = 0; outF < 48; outF++)
                        w[inF * 48 + outF] += (float)(8.0 * Enumerable.Range(0, 4).Sum(k => (double)d.B[outF * 4 + k] * d.A[k * 16 + inF]));
            return w;
        }).ToArray();
        var expected = h.RunBase(Gpt2Batch(), merged);
        Compare.Check("PEFT adapter logits", got["logits"], expected["logits"].Select(v => (float)v).ToArray(), atol: 1e-5, rtol: 1e-5);

        // Round trip: what Save writes reads back the same, with PEFT's keys and config fields.
        var again = Path.Combine(dir, "saved");
        adapter.Save(again);
        var keys = SafeTensorsFile.ReadAll(Path.Combine(again, LoraAdapter.WeightsFile)).Keys.Order(StringComparer.Ordinal).ToArray();
        Assert.Equal(tensors.Select(t => t.Name).Order(StringComparer.Ordinal), keys);
        var json = System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(Path.Combine(again, LoraAdapter.ConfigFile)))!;
        Assert.Equal(("LORA", 4, 32, true, "none", "CAUSAL_LM"), ((string)json["peft_type"]!, (int)json["r"]!, (int)json["lora_alpha"]!, (bool)json["fan_in_fan_out"]!, (string)json["bias"]!, (string)json["task_type"]!));
        var reloaded = LoraAdapter.Load(again, h.Modules);
        for (int i = 0; i < h.Modules.Count; i++)
        {
            Assert.Equal(adapter.A(i), reloaded.A(i));
            Assert.Equal(adapter.B(i), reloaded.B(i));
        }
        Directory.Delete(dir, true);
    }

    public static TheoryData<string, string> BadAdapters => new()
    {
        { "missing-b", "transformer.h.1.attn.c_attn.lora_B.weight' is missing" },
        { "in-mismatch", "does not fit base module 'transformer.h.0.attn.c_attn'" },
        { "r-mismatch", "says r = 4" },
        { "unknown-module", "module 'transformer.h.0.mlp.c_fc', which the model does not adapt" },
        { "not-lora", "'base_model.model.transformer.h.0.attn.c_attn.bias' is not a LoRA weight" },
    };

    [Theory]
    [MemberData(nameof(BadAdapters))]
    public void BadAdapterFiles_AreRefused_NamingFileAndKey(string fault, string message)
    {
        var dir = Repo.TempDir();
        File.WriteAllText(Path.Combine(dir, LoraAdapter.ConfigFile), PeftConfigJson(r: 4, alpha: 8, targets: "[\"c_attn\"]"));
        var rng = new Random(1);
        var tensors = new List<SafeTensor>();
        for (int layer = 0; layer < 2; layer++)
        {
            var m = $"base_model.model.transformer.h.{layer}.attn.c_attn";
            int r = fault == "r-mismatch" && layer == 1 ? 3 : 4, nIn = fault == "in-mismatch" && layer == 0 ? 17 : 16;
            tensors.Add(SafeTensor.FromFloats($"{m}.lora_A.weight", HfWeights.Normal(rng, r * nIn, 0.1), r, nIn));
            if (!(fault == "missing-b" && layer == 1)) tensors.Add(SafeTensor.FromFloats($"{m}.lora_B.weight", HfWeights.Normal(rng, 48 * r, 0.1), 48, r));
        }
        if (fault == "unknown-module") tensors.Add(SafeTensor.FromFloats("base_model.model.transformer.h.0.mlp.c_fc.lora_A.weight", new float[64], 4, 16));
        if (fault == "not-lora") tensors.Add(SafeTensor.FromFloats("base_model.model.transformer.h.0.attn.c_attn.bias", new float[48], 48));
        var file = Path.Combine(dir, LoraAdapter.WeightsFile);
        SafeTensorsFile.Write(file, tensors);
        var modules = LoraGraph.Modules(TrainingGraph.BuildEval("lora", LoraGraph.Apply(Gpt2(Gpt2Tiny), LoraAdapter.ReadConfig(dir))));
        var e = Assert.Throws<InvalidDataException>(() => LoraAdapter.Load(dir, modules));
        Assert.Contains(file, e.Message);
        Assert.Contains(message, e.Message);
        Directory.Delete(dir, true);
    }

    [Fact]
    public void Targets_ThatAreNoLinearLayer_OrMatchNothing_AreRefused()
    {
        var embedding = Assert.Throws<NotSupportedException>(() => TrainingGraph.BuildEval("lora", LoraGraph.Apply(Gpt2(Gpt2Tiny), new LoraConfig { TargetModules = ["wte"] })));
        Assert.Contains("'transformer.wte'", embedding.Message);
        Assert.Contains("Gather", embedding.Message);
        var norm = Assert.Throws<NotSupportedException>(() => TrainingGraph.BuildEval("lora", LoraGraph.Apply(Gpt2(Gpt2Tiny), new LoraConfig { TargetModules = ["ln_1"] })));
        Assert.Contains("LayerNormalization", norm.Message);
        var none = Assert.Throws<GraphBuildException>(() => TrainingGraph.BuildEval("lora", LoraGraph.Apply(Gpt2(Gpt2Tiny), new LoraConfig { TargetModules = ["q_proj"] })));
        Assert.Contains("[q_proj] not found", none.Message);
        Assert.Contains("transformer.h.0.attn.c_attn", none.Message);
        var dora = Repo.TempDir();
        File.WriteAllText(Path.Combine(dora, LoraAdapter.ConfigFile), PeftConfigJson(4, 8, "[\"c_attn\"]").Replace("\"use_dora\": false", "\"use_dora\": true"));
        Assert.Contains("use_dora", Assert.Throws<NotSupportedException>(() => LoraAdapter.ReadConfig(dora)).Message);
        Directory.Delete(dora, true);
    }

    [Fact]
    public void InferenceDecoder_TakesTheSameAdapter()
    {
        var lora = new LoraConfig { R = 2, TargetModules = ["c_attn"] };
        var g = new GraphBuilder("decoder");
        LoraGraph.Build(g, lora, training: false, () => Models.Gpt2.DefineDecoder(g, Gpt2Tiny));
        var train = TrainingGraph.BuildEval("lora", LoraGraph.Apply(Gpt2(Gpt2Tiny), lora));
        Assert.Equal(LoraGraph.Modules(train), LoraGraph.Modules(g));
        Assert.Equal(4, g.Parameters.Count(p => p.Name.Contains(".lora_", StringComparison.Ordinal)));
    }

    [Fact]
    public void OtherKinds_AdaptTheirLinearLayers_AndRefuseConvolutions()
    {
        var unet = new UNet2DConfig
        {
            SampleSize = 4, InChannels = 1, OutChannels = 3, BlockOutChannels = [8], LayersPerBlock = 1,
            DownBlockTypes = ["AttnDownBlock2D"], UpBlockTypes = ["AttnUpBlock2D"], NormNumGroups = 4, AttentionHeadDim = null,
        };
        Func<GraphBuilder, bool, ModelOutputs> unetDefine = (g, t) => UNet2D.Define(g, t, unet);
        var g = TrainingGraph.BuildTraining("unet-lora", LoraGraph.Apply(unetDefine, new LoraConfig { R = 2, TargetModules = ["to_q", "to_v", "time_emb_proj"] }));
        var modules = LoraGraph.Modules(g);
        Assert.Contains(modules, m => m.Name.EndsWith(".attentions.0.to_q", StringComparison.Ordinal));
        Assert.Contains(modules, m => m.Name.EndsWith(".resnets.0.time_emb_proj", StringComparison.Ordinal));
        Assert.All(modules, m => Assert.False(m.FanInFanOut));
        Assert.All(modules, m => Assert.Contains(g.Outputs, o => o.Name == "grad." + m.AName));
        var conv = Assert.Throws<NotSupportedException>(() => TrainingGraph.BuildEval("unet-lora", LoraGraph.Apply(unetDefine, new LoraConfig { TargetModules = ["conv1"] })));
        Assert.Contains("Conv", conv.Message);
        Assert.Contains("convolutions is not supported", conv.Message);

        var series = new TimeSeriesConfig
        {
            ModelType = "time_series_transformer", PredictionLength = 4, ContextLength = 8, LagsSequence = [1, 3, 4], DistributionOutput = "normal", Scaling = "std",
            NumStaticCategoricalFeatures = 2, Cardinality = [3, 5], EmbeddingDimension = [2, 3], NumStaticRealFeatures = 1, NumTimeFeatures = 2, NumDynamicRealFeatures = 1,
            DModel = 8, EncoderLayers = 2, DecoderLayers = 2, EncoderAttentionHeads = 2, DecoderAttentionHeads = 4, EncoderFfnDim = 6, DecoderFfnDim = 5,
            ActivationFunction = "gelu_new", Dropout = 0, AttentionDropout = 0, ActivationDropout = 0, EncoderLayerdrop = 0, DecoderLayerdrop = 0,
        };
        var ts = TrainingGraph.BuildEval("ts-lora", LoraGraph.Apply((g2, t) => TimeSeriesModel.Define(g2, t, series), new LoraConfig { R = 2, TargetModules = ["q_proj", "v_proj"] }));
        // Two layers each side; the decoder has self- and cross-attention.
        Assert.Equal(2 * (2 + 2 * 2), LoraGraph.Modules(ts).Count);
    }

    /// <summary>adapter_config.json as PEFT 0.17's save_pretrained writes it for GPT-2 (sorted keys, indent 2).</summary>
    private static string PeftConfigJson(int r, int alpha, string targets) => $$"""
        {
          "alpha_pattern": {},
          "auto_mapping": null,
          "base_model_name_or_path": "gpt2-tiny",
          "bias": "none",
          "corda_config": null,
          "eva_config": null,
          "exclude_modules": null,
          "fan_in_fan_out": true,
          "inference_mode": true,
          "init_lora_weights": true,
          "layer_replication": null,
          "layers_pattern": null,
          "layers_to_transform": null,
          "loftq_config": {},
          "lora_alpha": {{alpha}},
          "lora_bias": false,
          "lora_dropout": 0.05,
          "megatron_config": null,
          "megatron_core": "megatron.core",
          "modules_to_save": null,
          "peft_type": "LORA",
          "r": {{r}},
          "rank_pattern": {},
          "revision": null,
          "target_modules": {{targets}},
          "task_type": "CAUSAL_LM",
          "trainable_token_indices": null,
          "use_dora": false,
          "use_rslora": false
        }
        """;
}

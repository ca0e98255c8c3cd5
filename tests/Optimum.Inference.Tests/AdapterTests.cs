using System.Text.Json.Nodes;
using Optimum.Core;
using Optimum.Hub;
using Optimum.Hub.Lora;
using Optimum.Inference.Lora;
using Optimum.Models;
using Optimum.Onnx;
using Optimum.Onnx.Lora;
using Optimum.Tests;
using Xunit;

namespace Optimum.Inference.Tests;

/// <summary>
/// LoRA adapters served over a shared base (<see cref="AdapterHost"/>): against the merged model (the adapter folded into
/// a copy of the weights, served as an ordinary folder) and against the adapter model built by <see cref="LoraGraph"/>
/// from the kind's own decoder definition, on a small GPT-2 with random weights.
/// </summary>
public sealed class AdapterTests : IClassFixture<AdapterTests.Fixture>
{
    private static readonly Gpt2Config Config = new()
    {
        VocabSize = 50257, NPositions = 64, NEmbd = 16, NLayer = 2, NHead = 2, EmbdPdrop = 0, AttnPdrop = 0, ResidPdrop = 0, InitializerRange = 0.3,
    };

    public sealed class Fixture : IDisposable
    {
        public readonly string Root = Repo.TempDir();
        public string Base => Path.Combine(Root, "base");

        public Fixture() => ModelKinds.WritePreset(Base, Config, seed: 5);

        /// <summary>An adapter folder over the base: random A and B (B zero when asked), PEFT's files.</summary>
        public string Adapter(string name, LoraConfig config, int seed, bool zeroB = false)
        {
            var dir = Path.Combine(Root, name);
            if (Directory.Exists(dir)) return dir;
            var modules = ModulesOf(config);
            var rng = new Random(seed);
            var a = modules.Select(m => HfWeights.Normal(rng, config.R * m.In, 0.5)).ToArray();
            var b = modules.Select(m => zeroB ? new float[m.Out * config.R] : HfWeights.Normal(rng, m.Out * config.R, 0.5)).ToArray();
            LoraAdapter.Create(config, modules, a, b).Save(dir);
            return dir;
        }

        /// <summary>The modules the kind's LoRA decoder adapts for <paramref name="config"/>.</summary>
        public static IReadOnlyList<LoraModule> ModulesOf(LoraConfig config)
        {
            var g = new GraphBuilder("gpt2_decoder_lora");
            LoraGraph.Build(g, config, false, () => Gpt2.DefineDecoder(g, Config));
            return LoraGraph.Modules(g);
        }

        /// <summary>A model folder with the adapter merged into the base weights (LoraAdapter.Merge), served as any folder.</summary>
        public string Merged(string adapterDir)
        {
            var dir = adapterDir + "-merged";
            if (Directory.Exists(dir)) return dir;
            var ps = ModelFolder.ReadParameters(Base);
            var w = HfWeights.Load(Path.Combine(Base, ModelFolder.WeightsFile), ps, out _);
            var config = LoraAdapter.ReadConfig(adapterDir);
            LoraAdapter.Load(adapterDir, ModulesOf(config), config).Merge(ps, w);
            Directory.CreateDirectory(dir);
            foreach (var f in Directory.GetFiles(Base).Where(f => Path.GetFileName(f) != ModelFolder.WeightsFile)) File.Copy(f, Path.Combine(dir, Path.GetFileName(f)));
            HfWeights.Save(Path.Combine(dir, ModelFolder.WeightsFile), ps, w);
            return dir;
        }

        /// <summary>
        /// The adapter model itself: the KV-cache decoder built with LoRA by the graph builder (Gpt2.DefineDecoder under
        /// LoraGraph.Build), its A and B as ordinary embedded weights beside the base's.
        /// </summary>
        public string Direct(string adapterDir)
        {
            var dir = adapterDir + "-direct";
            if (Directory.Exists(dir)) return dir;
            var config = LoraAdapter.ReadConfig(adapterDir);
            var g = new GraphBuilder("gpt2_decoder");
            LoraGraph.Build(g, config, false, () => Gpt2.DefineDecoder(g, Config));
            var adapter = LoraAdapter.Load(adapterDir, LoraGraph.Modules(g), config);
            var basePs = ModelFolder.ReadParameters(Base);
            var values = basePs.Zip(HfWeights.Load(Path.Combine(Base, ModelFolder.WeightsFile), basePs, out _)).ToDictionary(x => x.First.Name, x => x.Second);
            foreach (var (p, v) in adapter.Tensors) values[p.Name] = v;
            var ps = g.Parameters.Select(p => new ParameterInfo(p.Name, p.Shape.ToStatic())).ToArray();
            Directory.CreateDirectory(dir);
            foreach (var f in Directory.GetFiles(Base).Where(f => Path.GetFileName(f) is not (ModelFolder.WeightsFile or ModelFolder.ConfigFile))) File.Copy(f, Path.Combine(dir, Path.GetFileName(f)));
            ModelWriter.Save(g, Path.Combine(dir, ModelFolder.InferenceFile));
            var json = ModelFolder.ReadConfig(Base).Json.DeepClone().AsObject();
            json["optimum"]!["parameters"] = new JsonArray(ps.Select(p => (JsonNode)new JsonObject { ["name"] = p.Name, ["shape"] = new JsonArray(p.Shape.Select(d => (JsonNode)d).ToArray()) }).ToArray());
            File.WriteAllText(Path.Combine(dir, ModelFolder.ConfigFile), json.ToJsonString());
            HfWeights.Save(Path.Combine(dir, ModelFolder.WeightsFile), ps, ps.Select(p => values[p.Name]).ToArray());
            return dir;
        }

        public void Dispose() => Directory.Delete(Root, true);
    }

    private readonly Fixture _f;
    public AdapterTests(Fixture f) => _f = f;

    private static readonly LoraConfig Attn = new() { R = 4, LoraAlpha = 8, TargetModules = ["c_attn"] };
    private static readonly LoraConfig Mlp = new() { R = 2, LoraAlpha = 3, TargetModules = ["c_fc", "mlp.c_proj"] };
    private static readonly int[] Prompt = [464, 2068, 7586, 21831, 18045, 625];

    /// <summary>Logits of the prompt's last position, then of each of 5 greedy steps, and the 8 greedy tokens.</summary>
    private static (float[][] Logits, IReadOnlyList<int> Tokens) Run(CausalLm lm)
    {
        var logits = new List<float[]>();
        using (var s = lm.Start())
        {
            var step = s.Step(Prompt.Select(t => (long)t).ToArray(), Enumerable.Range(0, Prompt.Length).Select(i => (long)i).ToArray(), Enumerable.Repeat(1L, Prompt.Length).ToArray(), 1).ToArray();
            logits.Add(step);
            for (int t = Prompt.Length; t < Prompt.Length + 5; t++)
            {
                long next = Array.IndexOf(step, step.Max());
                step = s.Step([next], [t], Enumerable.Repeat(1L, t + 1).ToArray(), 1).ToArray();
                logits.Add(step);
            }
        }
        var tokens = Generator.Generate(lm, [Prompt], new GenerationOptions { MaxNewTokens = 8 })[0].Tokens;
        return (logits.ToArray(), tokens);
    }

    private static void AssertClose(float[][] expected, float[][] actual, double tol)
    {
        Assert.Equal(expected.Length, actual.Length);
        for (int i = 0; i < expected.Length; i++)
        {
            double worst = expected[i].Zip(actual[i], (e, a) => Math.Abs(e - a) / (1 + Math.Abs(e))).Max();
            Assert.True(worst <= tol, $"step {i}: logits differ by {worst:G3} (relative to 1 + |e|), tolerance {tol:G3}");
        }
    }

    [Fact]
    public void Adapter_OverSharedBase_EqualsMergedModelAndAdapterModel()
    {
        var dir = _f.Adapter("attn", Attn, seed: 1);
        using var host = AdapterHost.Open(_f.Base);
        using var served = host.OpenAdapter(dir);
        using var merged = new CausalLm(_f.Merged(dir));
        using var direct = new CausalLm(_f.Direct(dir));
        using var plain = new CausalLm(_f.Base);
        var (s, m, d, p) = (Run(served), Run(merged), Run(direct), Run(plain));
        AssertClose(m.Logits, s.Logits, 1e-5);
        AssertClose(d.Logits, s.Logits, 1e-5);
        Assert.Equal(m.Tokens, s.Tokens);
        Assert.Equal(d.Tokens, s.Tokens);
        // The adapter changes the model: its logits are not the base's.
        Assert.True(p.Logits[0].Zip(s.Logits[0], (a, b) => Math.Abs(a - b)).Max() > 1e-2);
        Assert.Equal(Attn.R, served.Adapter!.Config.R);
        Assert.Equal(["transformer.h.0.attn.c_attn", "transformer.h.1.attn.c_attn"], served.Adapter.Modules.Select(x => x.Name));
    }

    [Fact]
    public void Adapter_WithZeroB_EqualsBaseExactly()
    {
        var dir = _f.Adapter("zero", Mlp, seed: 2, zeroB: true);
        using var host = AdapterHost.Open(_f.Base);
        using var served = host.OpenAdapter(dir);
        using var plain = new CausalLm(_f.Base);
        var (s, p) = (Run(served), Run(plain));
        AssertClose(p.Logits, s.Logits, 0);
        Assert.Equal(p.Tokens, s.Tokens);
    }

    [Fact]
    public void TwoAdapters_AndBase_OneHost_EachGiveTheirOwnModel()
    {
        var one = _f.Adapter("attn", Attn, seed: 1);
        var two = _f.Adapter("mlp", Mlp, seed: 3);
        using var host = AdapterHost.Open(_f.Base);
        using var b = host.OpenBase();
        using var a1 = host.OpenAdapter(one);
        using var a2 = host.OpenAdapter(two);
        using var plain = new CausalLm(_f.Base);
        using var m1 = new CausalLm(_f.Merged(one));
        using var m2 = new CausalLm(_f.Merged(two));
        var (rb, r1, r2) = (Run(b), Run(a1), Run(a2));
        AssertClose(Run(plain).Logits, rb.Logits, 0);
        AssertClose(Run(m1).Logits, r1.Logits, 1e-5);
        AssertClose(Run(m2).Logits, r2.Logits, 1e-5);
        Assert.True(r1.Logits[0].Zip(r2.Logits[0], (x, y) => Math.Abs(x - y)).Max() > 1e-2);
    }

    [Fact]
    public void Models_OutliveTheHost_AndTheSharedBufferIsFreedWithTheLast()
    {
        var dir = _f.Adapter("attn", Attn, seed: 1);
        float[][] expected;
        using (var merged = new CausalLm(_f.Merged(dir))) expected = Run(merged).Logits;
        CausalLm lm, other;
        SharedWeights weights;
        using (var host = AdapterHost.Open(_f.Base)) (lm, other, weights) = (host.OpenAdapter(dir), host.OpenBase(), host.Weights);
        Assert.False(weights.Freed);
        AssertClose(expected, Run(lm).Logits, 1e-5);                                        // the host is gone, the model's hold keeps the weights
        lm.Dispose();
        lm.Dispose();                                                                        // releases once: the other model still holds the buffer
        Assert.False(weights.Freed);
        Run(other);
        other.Dispose();
        Assert.True(weights.Freed);
    }

    [Fact]
    public void BadAdapterFolders_AreRefusedNamingTheFileAndTensor()
    {
        using var host = AdapterHost.Open(_f.Base);
        var missing = Path.Combine(_f.Root, "nope");
        Assert.Contains($"Adapter folder '{missing}' does not exist", Assert.Throws<DirectoryNotFoundException>(() => host.OpenAdapter(missing)).Message);

        var noWeights = Path.Combine(_f.Root, "no-weights");
        Directory.CreateDirectory(noWeights);
        File.Copy(Path.Combine(_f.Adapter("attn", Attn, seed: 1), LoraAdapter.ConfigFile), Path.Combine(noWeights, LoraAdapter.ConfigFile), true);
        var e1 = Assert.Throws<FileNotFoundException>(() => host.OpenAdapter(noWeights));
        Assert.Contains(Path.Combine(noWeights, LoraAdapter.WeightsFile), e1.Message);

        var noConfig = Path.Combine(_f.Root, "no-config");
        Directory.CreateDirectory(noConfig);
        Assert.Contains(Path.Combine(noConfig, LoraAdapter.ConfigFile), Assert.Throws<FileNotFoundException>(() => host.OpenAdapter(noConfig)).Message);

        // A tensor for a wider base: A of c_attn is (4, 32), the base's c_attn takes 16 features.
        var wide = Path.Combine(_f.Root, "wide");
        var modules = Fixture.ModulesOf(Attn).Select(m => m with { In = 32 }).ToArray();
        LoraAdapter.Create(Attn, modules, modules.Select(m => new float[Attn.R * m.In]).ToArray(), modules.Select(m => new float[m.Out * Attn.R]).ToArray()).Save(wide);
        var e2 = Assert.Throws<InvalidDataException>(() => host.OpenAdapter(wide));
        Assert.Contains(Path.Combine(wide, LoraAdapter.WeightsFile), e2.Message);
        Assert.Contains("base_model.model.transformer.h.0.attn.c_attn.lora_A.weight", e2.Message);
        Assert.Contains("[4, 32]", e2.Message);

        // Targets the base does not have.
        var other = Path.Combine(_f.Root, "other");
        Directory.CreateDirectory(other);
        File.WriteAllText(Path.Combine(other, LoraAdapter.ConfigFile), LoraAdapter.ConfigJson(Attn with { TargetModules = ["q_proj"] }).ToJsonString());
        var e3 = Assert.Throws<InvalidDataException>(() => host.OpenAdapter(other));
        Assert.Contains("[q_proj] match no linear layer", e3.Message);
        Assert.Contains("transformer.h.0.attn.c_attn", e3.Message);
    }

    [Fact]
    public void AdapterSet_GivesATextGenerator_ThatCompletesAsTheMergedModel()
    {
        var dir = _f.Adapter("attn", Attn, seed: 1);
        var o = new GenerationOptions { MaxNewTokens = 10 };
        using var set = AdapterSet.OpenGpt2(_f.Base);
        using var adapter = set.LoadAdapter(dir);
        using var merged = new CausalLm(_f.Merged(dir));
        var expected = new TextGenerator(merged, Gpt2Tokenizer.Create()).Complete("Call me Ishmael", o);
        var got = adapter.Generator!.Complete("Call me Ishmael", o);
        Assert.Equal(expected.Text, got.Text);
        Assert.Equal(10, got.CompletionTokens);
        Assert.Equal(dir, adapter.Dir);
        Assert.Equal(["c_attn"], adapter.Generator.CausalModel!.Adapter!.Targets);
    }

    [Fact]
    public void BadBaseWeights_AreRefusedNamingTheTensor()
    {
        var ps = ModelFolder.ReadParameters(_f.Base);
        var w = HfWeights.Load(Path.Combine(_f.Base, ModelFolder.WeightsFile), ps, out _);
        var dir = Path.Combine(_f.Root, "nan-base");
        Directory.CreateDirectory(dir);
        foreach (var f in Directory.GetFiles(_f.Base).Where(f => Path.GetFileName(f) != ModelFolder.WeightsFile)) File.Copy(f, Path.Combine(dir, Path.GetFileName(f)), true);
        int c = ps.Select((p, i) => (p, i)).First(x => x.p.Name == "transformer.h.1.mlp.c_fc.weight").i;
        w[c][7] = float.NaN;
        HfWeights.Save(Path.Combine(dir, ModelFolder.WeightsFile), ps, w);
        var e = Assert.Throws<InvalidDataException>(() => AdapterHost.Open(dir));
        Assert.Equal($"{Path.Combine(Path.GetFullPath(dir), ModelFolder.WeightsFile)}: tensor 'transformer.h.1.mlp.c_fc.weight' holds NaN at element 7; weights must be finite.", e.Message);

        // Stored as F16: the shared buffer is the file's F32 bytes, so the base must hold F32.
        SafeTensorsFile.Write(Path.Combine(dir, ModelFolder.WeightsFile), ps.Select((p, i) => new SafeTensor(p.Name, i == c ? DType.Float16 : DType.Float, p.Shape,
            i == c ? new byte[p.Count * 2] : System.Runtime.InteropServices.MemoryMarshal.AsBytes(w[i].AsSpan()).ToArray())).ToArray());
        Assert.Contains("tensor 'transformer.h.1.mlp.c_fc.weight' is float16; a base shared by adapters must store its weights as F32", Assert.Throws<InvalidDataException>(() => AdapterHost.Open(dir)).Message);
    }
}

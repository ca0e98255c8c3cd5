using Optimum.Core;
using Optimum.Hub;
using Optimum.Models;
using Optimum.Tests;
using Xunit;

namespace Optimum.Models.Tests;

/// <summary>The registry: one kind per model_type, typed configs that survive their own folder, clear refusals.</summary>
public sealed class ModelKindsTests : IDisposable
{
    private readonly string _dir = Repo.TempDir();
    public void Dispose() => Directory.Delete(_dir, true);

    public static TheoryData<string> Configs => ["gpt2", "t5", "informer", "time_series_transformer", "mlp", "UNet2DModel"];

    private static object Config(string type) => type switch
    {
        "gpt2" => new Gpt2Config { VocabSize = 61, NPositions = 16, NEmbd = 16, NLayer = 1, NHead = 2 },
        "t5" => new T5Config { VocabSize = 40, DModel = 16, DKv = 4, DFf = 32, NumLayers = 1, NumDecoderLayers = 1, NumHeads = 2 },
        "mlp" => new MlpConfig { HiddenSizes = [8] },
        "UNet2DModel" => new UNet2DConfig
        {
            SampleSize = 8, InChannels = 1, OutChannels = 1, BlockOutChannels = [8, 16], LayersPerBlock = 1, NormNumGroups = 4, AttentionHeadDim = 4,
            DownBlockTypes = ["DownBlock2D", "AttnDownBlock2D"], UpBlockTypes = ["AttnUpBlock2D", "UpBlock2D"], NumClassEmbeds = 10,
        },
        _ => TimeSeriesConfig.Monthly(type, seriesCount: 3),
    };

    [Theory]
    [MemberData(nameof(Configs))]
    public void EveryKind_ReadsBackTheFolderItWrites(string type)
    {
        var config = Config(type);
        var dir = Path.Combine(_dir, type);
        ModelKinds.WritePreset(dir, config, seed: 3);
        var (kind, read) = ModelKinds.Read(dir);
        Assert.Contains(type, kind.ModelTypes);
        Assert.Same(kind, ModelKinds.For(config));
        Assert.Equal(kind.ToHf(config).ToJsonString(), kind.ToHf(read).ToJsonString());
        var ps = ModelFolder.ReadParameters(dir);
        var a = ModelKinds.InitialWeights(dir, seed: 99);                         // the folder's model.safetensors, not seed 99
        var b = ModelKinds.Initialize(ps, config, seed: 3);
        Assert.Equal(b.Length, a.Length);
        for (int i = 0; i < a.Length; i++) Assert.Equal(b[i], a[i]);
    }

    [Fact]
    public void UnknownOrMissingModelType_IsRefusedNamingTheFileAndTheKnownTypes()
    {
        File.WriteAllText(Path.Combine(_dir, "config.json"), "{\"model_type\": \"bert\"}");
        var e = Assert.Throws<InvalidDataException>(() => ModelKinds.Read(_dir));
        Assert.Contains(Path.Combine(_dir, "config.json"), e.Message);
        Assert.Contains("'bert' is not a known model kind (known: gpt2, t5, time_series_transformer, informer, mlp, UNet2DModel)", e.Message);
        File.WriteAllText(Path.Combine(_dir, "config.json"), "{}");
        Assert.Contains("model_type is missing", Assert.Throws<InvalidDataException>(() => ModelKinds.Read(_dir)).Message);
        Assert.Throws<ArgumentException>(() => ModelKinds.For(new object()));
    }

    [Fact]
    public void KindsWithoutALoader_SayWhatTheyCannotDo()
    {
        var dir = Path.Combine(_dir, "mlp");
        ModelKinds.WritePreset(dir, new MlpConfig(), seed: 0);
        var e = Assert.Throws<NotSupportedException>(() => ModelKinds.Load(dir));
        Assert.Contains("mlp models have no inference loader", e.Message);
    }

    /// <summary>A failed export leaves its destination as it was: nothing new in a fresh one, the old files of an existing one.</summary>
    [Fact]
    public void FailedExport_LeavesTheDestinationAsItWas()
    {
        var cfg = new Gpt2Config { VocabSize = 61, NPositions = 16, NEmbd = 16, NLayer = 1, NHead = 2 };
        var preset = Path.Combine(_dir, "preset");
        ModelKinds.WritePreset(preset, cfg, seed: 1);
        var ps = ModelFolder.ReadParameters(preset);
        var hf = Path.Combine(_dir, "hf");
        ModelKinds.ExportHf(hf, cfg, ps, HfWeights.Load(Path.Combine(preset, ModelFolder.WeightsFile), ps, out _));
        var weights = Path.Combine(hf, ModelFolder.WeightsFile);
        var good = File.ReadAllBytes(weights);

        var fresh = Path.Combine(_dir, "out", "fresh");
        var existing = Path.Combine(_dir, "out", "existing");
        Directory.CreateDirectory(existing);
        File.WriteAllText(Path.Combine(existing, "config.json"), "old");
        foreach (var cut in new[] { good.Length - 1, good.Length / 2, 100, 9 })
        {
            File.WriteAllBytes(weights, good[..cut]);
            foreach (var dest in new[] { fresh, existing })
                Assert.Throws<InvalidDataException>(() => ModelKinds.Export(hf, dest));
            Assert.False(Directory.Exists(fresh), $"a failed export (weights cut at {cut} bytes) created {fresh}");
            Assert.Equal(["config.json"], Directory.GetFiles(existing).Select(Path.GetFileName));
            Assert.Equal("old", File.ReadAllText(Path.Combine(existing, "config.json")));
            Assert.Equal(["existing"], Directory.GetFileSystemEntries(Path.Combine(_dir, "out")).Select(Path.GetFileName));   // no temporary folders left
        }
        File.WriteAllBytes(weights, good);
        ModelKinds.Export(hf, existing);
        Assert.Equal(ps.Count, HfWeights.Load(Path.Combine(existing, ModelFolder.WeightsFile), ps, out _).Length);
        Assert.NotEqual("old", File.ReadAllText(Path.Combine(existing, "config.json")));
    }

    /// <summary>A corrupted inference graph is refused naming the file (it was a bare protobuf message).</summary>
    [Fact]
    public void CorruptedInferenceGraph_IsRefusedNamingTheFile()
    {
        var dir = Path.Combine(_dir, "corrupt");
        ModelKinds.WritePreset(dir, new UNet2DConfig
        {
            SampleSize = 8, InChannels = 1, OutChannels = 1, BlockOutChannels = [8], LayersPerBlock = 1, NormNumGroups = 4,
            DownBlockTypes = ["DownBlock2D"], UpBlockTypes = ["UpBlock2D"],
        }, seed: 0);
        var graph = Path.Combine(dir, ModelFolder.InferenceFile);
        var bytes = File.ReadAllBytes(graph);
        File.WriteAllBytes(graph, bytes[..(bytes.Length / 3)]);
        var e = Assert.Throws<InvalidDataException>(() => ModelKinds.Load(dir));
        Assert.Contains(graph, e.Message);
        Assert.Contains("is not a readable ONNX model", e.Message);
    }

    /// <summary>A GPT-2 whose vocab_size is below the BPE tokenizer's is refused at load (served, every request would be a 500).</summary>
    [Fact]
    public void LanguageModelTheTokenizerDoesNotFit_IsRefusedAtLoad()
    {
        var dir = Path.Combine(_dir, "small-vocab");
        ModelKinds.WritePreset(dir, new Gpt2Config { VocabSize = 512, NPositions = 16, NEmbd = 16, NLayer = 1, NHead = 2 }, seed: 0);
        var e = Assert.Throws<InvalidDataException>(() => ModelKinds.Load(dir));
        Assert.Contains("GPT-2's BPE tokenizer has 50,257 tokens but the model's vocab_size is 512", e.Message);
        var fits = Path.Combine(_dir, "full-vocab");
        ModelKinds.WritePreset(fits, new Gpt2Config { VocabSize = 50257, NPositions = 16, NEmbd = 8, NLayer = 1, NHead = 2 }, seed: 0);
        using var model = ModelKinds.Load(fits);
        Assert.NotNull(model.Generator);
    }

    /// <summary>
    /// An HF T5 folder with a data-built vocab.json exports with its tokenizer (generate on the export found none), a
    /// tokenizer larger than the vocabulary is refused before anything is written, and trained weights written for
    /// transformers carry it too.
    /// </summary>
    [Fact]
    public void T5Export_CarriesTheTokenizer()
    {
        var cfg = new T5Config { VocabSize = 40, DModel = 16, DKv = 4, DFf = 32, NumLayers = 1, NumDecoderLayers = 1, NumHeads = 2 };
        var preset = Path.Combine(_dir, "t5-preset");
        ModelKinds.WritePreset(preset, cfg, seed: 2);
        var ps = ModelFolder.ReadParameters(preset);
        var hf = Path.Combine(_dir, "t5-hf");
        ModelKinds.ExportHf(hf, cfg, ps, HfWeights.Load(Path.Combine(preset, ModelFolder.WeightsFile), ps, out _));
        var tok = SymbolTokenizer.Build([("abc", "x y"), ("ba", "y z")]);
        tok.Save(hf);

        var out1 = Path.Combine(_dir, "t5-export");
        ModelKinds.Export(hf, out1);
        Assert.Equal(File.ReadAllBytes(Path.Combine(hf, SymbolTokenizer.FileName)), File.ReadAllBytes(Path.Combine(out1, SymbolTokenizer.FileName)));
        using (var model = ModelKinds.Load(out1))
        {
            var done = model.Generator!.Complete("abc", new Optimum.Inference.GenerationOptions { MaxNewTokens = 3 });
            Assert.InRange(done.CompletionTokens, 1, 3);
            Assert.Equal(tok.EncodeSource("abc").Length, done.PromptTokens);
        }
        var back = Path.Combine(_dir, "t5-back");
        ModelKinds.For(cfg).ExportFiles(out1, back);
        Assert.True(File.Exists(Path.Combine(back, SymbolTokenizer.FileName)));

        // 41 symbols for a vocabulary of 40: refused, naming both, and the destination is not created.
        SymbolTokenizer.Build([(string.Concat(Enumerable.Range(0, 37).Select(i => (char)('A' + i))), "w")]).Save(hf);
        var out2 = Path.Combine(_dir, "t5-refused");
        var e = Assert.Throws<InvalidDataException>(() => ModelKinds.Export(hf, out2));
        Assert.Contains("has 41 tokens but its config.json's vocab_size is 40", e.Message);
        Assert.False(Directory.Exists(out2));
    }

    /// <summary>Every kind's inference loader refuses weights holding NaN or infinity, naming the file and the tensor.</summary>
    [Theory]
    [InlineData("gpt2")]
    [InlineData("t5")]
    [InlineData("informer")]
    [InlineData("UNet2DModel")]
    public void NonFiniteWeights_AreRefusedAtLoad(string type)
    {
        var dir = Path.Combine(_dir, type + "-nan");
        var config = type == "gpt2" ? new Gpt2Config { VocabSize = 50257, NPositions = 16, NEmbd = 8, NLayer = 1, NHead = 2 } : Config(type);
        ModelKinds.WritePreset(dir, config, seed: 0);
        if (type == "t5") SymbolTokenizer.Build([("ab", "c")]).Save(dir);
        var ps = ModelFolder.ReadParameters(dir);
        var path = Path.Combine(dir, ModelFolder.WeightsFile);
        var w = HfWeights.Load(path, ps, out _);
        int last = ps.Count - 1;
        w[last][w[last].Length - 1] = type == "informer" ? float.NegativeInfinity : float.NaN;
        HfWeights.Save(path, ps, w);
        var e = Assert.Throws<InvalidDataException>(() => ModelKinds.Load(dir));
        Assert.Contains($"{path}: tensor '{ps[last].Name}' holds {(type == "informer" ? "-Infinity" : "NaN")} at element {w[last].Length - 1}", e.Message);
    }

    [Fact]
    public void DiffusersUNetFolder_ExportsWithItsWeights_AndInitialisesAsTorch()
    {
        var dir = Path.Combine(_dir, "unet");
        Assert.Empty(ModelKinds.Export(UnetTiny.Dir, dir));                             // found by _class_name: UNet2DModel
        var ps = ModelFolder.ReadParameters(dir);
        var exported = HfWeights.Load(Path.Combine(dir, ModelFolder.WeightsFile), ps, out _);
        var fixture = HfWeights.Load(Path.Combine(UnetTiny.Dir, ModelFolder.WeightsFile), ps, out var unused);
        Assert.Empty(unused);
        for (int i = 0; i < ps.Count; i++) Assert.Equal(fixture[i], exported[i]);
        Assert.Equal(144, ps.Count);

        var init = ModelKinds.Initialize(ps, UnetTiny.Config, seed: 1);
        var conv = init[ps.ToList().FindIndex(p => p.Name == "up_blocks.0.resnets.0.conv1.weight")];     // (32, 64, 3, 3): fan_in 576
        double bound = 1 / Math.Sqrt(576), std = Math.Sqrt(conv.Select(v => (double)v * v).Average());
        Assert.True(conv.Max() <= bound && conv.Min() >= -bound, "weights outside U(-1/sqrt(fan_in), 1/sqrt(fan_in))");
        Assert.InRange(std, 0.95 * bound / Math.Sqrt(3), 1.05 * bound / Math.Sqrt(3));   // 18,432 draws
        Assert.All(init[ps.ToList().FindIndex(p => p.Name == "conv_norm_out.weight")], v => Assert.Equal(1f, v));
        Assert.All(init[ps.ToList().FindIndex(p => p.Name == "conv_norm_out.bias")], v => Assert.Equal(0f, v));
    }
}

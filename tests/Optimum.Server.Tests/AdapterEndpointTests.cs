using System.Net.Http.Json;
using System.Text;
using System.Text.Json;
using Microsoft.AspNetCore.Mvc.Testing;
using Optimum.Core;
using Optimum.Hub;
using Optimum.Hub.Lora;
using Optimum.Inference.Lora;
using Optimum.Onnx.Lora;
using Optimum.Onnx.Proto;
using Optimum.Tests;
using Xunit;

namespace Optimum.Server.Tests;

/// <summary>
/// LoRA adapters served over a base (<see cref="ServerOptions.Adapters"/>, "name=folder@base"): each answers as the model
/// with the adapter merged into a copy of the weights answers when served as an ordinary folder; /v1/models lists them.
/// </summary>
[Collection(ModelFixture.Collection)]
public sealed class AdapterEndpointTests(ModelFixture model)
{
    private static StringContent Json(string body) => new(body, Encoding.UTF8, "application/json");

    private static readonly LoraConfig Attn = new() { R = 4, LoraAlpha = 8, TargetModules = ["c_attn"] };
    private static readonly LoraConfig Mlp = new() { R = 2, LoraAlpha = 2, TargetModules = ["c_fc", "mlp.c_proj"] };

    private static IReadOnlyList<LoraModule> Modules(string baseDir, LoraConfig c) => AdapterGraph.Modules(
        ModelProto.Parser.ParseFrom(File.ReadAllBytes(Path.Combine(baseDir, ModelFolder.InferenceFile))).Graph, ModelFolder.ReadParameters(baseDir), c, baseDir);

    /// <summary>An adapter folder with random A and B (std 1: a change the greedy tokens show), and the base with it merged.</summary>
    private (string Adapter, string Merged) Make(string name, LoraConfig c, int seed)
    {
        var root = Path.Combine(model.Root, "adapters");
        var dir = Path.Combine(root, name);
        var merged = dir + "-merged";
        if (Directory.Exists(merged)) return (dir, merged);
        var modules = Modules(model.Dir, c);
        var rng = new Random(seed);
        var adapter = LoraAdapter.Create(c, modules, modules.Select(m => HfWeights.Normal(rng, c.R * m.In, 1)).ToArray(), modules.Select(m => HfWeights.Normal(rng, m.Out * c.R, 1)).ToArray());
        adapter.Save(dir);
        var ps = ModelFolder.ReadParameters(model.Dir);
        var w = HfWeights.Load(Path.Combine(model.Dir, ModelFolder.WeightsFile), ps, out _);
        adapter.Merge(ps, w);
        var tmp = merged + ".tmp";
        Directory.CreateDirectory(tmp);
        foreach (var f in Directory.GetFiles(model.Dir).Where(f => Path.GetFileName(f) != ModelFolder.WeightsFile)) File.Copy(f, Path.Combine(tmp, Path.GetFileName(f)), true);
        HfWeights.Save(Path.Combine(tmp, ModelFolder.WeightsFile), ps, w);
        Directory.Move(tmp, merged);
        return (dir, merged);
    }

    private WebApplicationFactory<Program> Served(params (string Key, string Value)[] settings) => model.Factory(settings);

    private static async Task<string> Complete(HttpClient c, string name, string prompt = "Call me Ishmael")
    {
        var r = await c.PostAsync("/v1/completions", Json($"{{\"model\": \"{name}\", \"prompt\": \"{prompt}\", \"max_tokens\": 12, \"temperature\": 0}}"));
        var body = await r.Content.ReadAsStringAsync();
        Assert.True(r.IsSuccessStatusCode, $"{name}: {(int)r.StatusCode} {body}");
        var doc = JsonDocument.Parse(body).RootElement;
        Assert.Equal(name, doc.GetProperty("model").GetString());
        return doc.GetProperty("choices")[0].GetProperty("text").GetString()!;
    }

    private static async Task<string> Stream(HttpClient c, string name)
    {
        var r = await c.PostAsync("/v1/completions", Json($"{{\"model\": \"{name}\", \"prompt\": \"Call me Ishmael\", \"max_tokens\": 12, \"temperature\": 0, \"stream\": true}}"));
        r.EnsureSuccessStatusCode();
        var events = (await r.Content.ReadAsStringAsync()).Split("\n\n", StringSplitOptions.RemoveEmptyEntries);
        Assert.Equal("data: [DONE]", events[^1]);
        return string.Concat(events[..^1].Select(e => JsonDocument.Parse(e["data: ".Length..]).RootElement.GetProperty("choices")[0].GetProperty("text").GetString()));
    }

    [Fact]
    public async Task TwoAdapters_AndTheBase_InOneProcess_AnswerAsTheirMergedModels()
    {
        var (a1, m1) = Make("attn", Attn, seed: 1);
        var (a2, m2) = Make("mlp", Mlp, seed: 2);
        await using var f = Served(("Models:1", $"merged1={m1}"), ("Models:2", $"merged2={m2}"), ("Models:3", $"plain={model.Dir}"),
            ("Adapters:0", $"attn={a1}@tiny-gpt2"), ("Adapters:1", $"mlp={a2}@tiny-gpt2"));
        var c = f.CreateClient();
        string b = await Complete(c, "tiny-gpt2"), x1 = await Complete(c, "attn"), x2 = await Complete(c, "mlp");
        Assert.Equal(await Complete(c, "plain"), b);
        Assert.Equal(await Complete(c, "merged1"), x1);
        Assert.Equal(await Complete(c, "merged2"), x2);
        Assert.Equal(3, new[] { b, x1, x2 }.Distinct().Count());                          // each answers as its own model
        Assert.Equal(x1, await Stream(c, "attn"));
        Assert.Equal(x2, await Stream(c, "mlp"));
        // At once: each model's continuous batch decodes its own rows over the one copy of the base weights.
        var prompts = new[] { "The whale", "Call me Ishmael", "It was" };
        var names = new[] { "tiny-gpt2", "attn", "mlp" };
        var alone = new Dictionary<(string, string), string>();
        foreach (var n in names) foreach (var p in prompts) alone[(n, p)] = await Complete(c, n, p);
        var together = await Task.WhenAll(names.SelectMany(n => prompts.Select(async p => (n, p, Text: await Complete(c, n, p)))));
        Assert.All(together, t => Assert.Equal(alone[(t.n, t.p)], t.Text));
    }

    [Fact]
    public async Task Models_ListsAdapters_WithTheirBaseAndLoraSettings()
    {
        var (a1, _) = Make("attn", Attn, seed: 1);
        await using var f = Served(("Adapters:0", $"attn={a1}@tiny-gpt2"));
        var models = await f.CreateClient().GetFromJsonAsync<JsonElement>("/v1/models");
        var data = models.GetProperty("data").EnumerateArray().ToArray();
        Assert.Equal(["tiny-gpt2", "attn"], data.Select(d => d.GetProperty("id").GetString()));
        Assert.False(data[0].TryGetProperty("adapter", out _));
        Assert.Equal("causal-lm", data[1].GetProperty("kind").GetString());
        var a = data[1].GetProperty("adapter");
        Assert.Equal("tiny-gpt2", a.GetProperty("base").GetString());
        Assert.Equal("lora", a.GetProperty("type").GetString());
        Assert.Equal(4, a.GetProperty("r").GetInt32());
        Assert.Equal(8, a.GetProperty("lora_alpha").GetDouble());
        Assert.Equal(["c_attn"], a.GetProperty("target_modules").EnumerateArray().Select(t => t.GetString()));
        Assert.Equal(1, a.GetProperty("modules").GetInt32());                            // one block: h.0.attn.c_attn
    }

    private static string StartupError(WebApplicationFactory<Program> f)
    {
        var e = Assert.ThrowsAny<Exception>(() => f.CreateClient());
        var messages = new List<string>();
        for (Exception? x = e; x is not null; x = x.InnerException) messages.Add(x.Message);
        return string.Join(" | ", messages);
    }

    [Fact]
    public async Task BadAdapters_AreRefusedAtStartup_NamingWhatIsWrong()
    {
        var (a1, _) = Make("attn", Attn, seed: 1);
        await using (var f = Served(("Adapters:0", $"attn={a1}@nope")))
            Assert.Contains("Optimum:Adapters:0 ('attn'): its base 'nope' is not a served model (served: tiny-gpt2)", StartupError(f));
        var missing = Path.Combine(model.Root, "no-such-adapter");
        await using (var f = Served(("Adapters:0", $"x={missing}@tiny-gpt2")))
            Assert.Contains($"Optimum:Adapters:0 ('x'): the adapter folder '{missing}' does not exist", StartupError(f));
        await using (var f = Served(("Adapters:0", $"tiny-gpt2={a1}@tiny-gpt2")))
            Assert.Contains("the name 'tiny-gpt2' is already taken", StartupError(f));

        // Made for a wider base: A of c_attn is (4, 16); the served base's c_attn takes 8 features.
        var wide = Path.Combine(model.Root, "adapters", "wide");
        var modules = Modules(model.Dir, Attn).Select(m => m with { In = 16 }).ToArray();
        LoraAdapter.Create(Attn, modules, modules.Select(m => new float[Attn.R * m.In]).ToArray(), modules.Select(m => new float[m.Out * Attn.R]).ToArray()).Save(wide);
        await using (var f = Served(("Adapters:0", $"wide={wide}@tiny-gpt2")))
        {
            var error = StartupError(f);
            Assert.Contains($"Adapter 'wide' ('{wide}') over 'tiny-gpt2' cannot be served", error);
            Assert.Contains($"{Path.Combine(wide, LoraAdapter.WeightsFile)}: tensor 'base_model.model.transformer.h.0.attn.c_attn.lora_A.weight' has shape [4, 16]", error);
        }
        // A kind without adapter serving (T5 here) is named.
        await using (var f = Served(("Models:1", $"t5={model.T5Dir}"), ("Adapters:0", $"x={a1}@t5")))
            Assert.Contains("t5 models cannot serve LoRA adapters", StartupError(f));
    }
}

using System.Text.Json.Nodes;
using Optimum.Core;
using Optimum.Hub;
using Optimum.Models;
using Optimum.Tests;
using Optimum.Tests.Fuzz;
using Xunit;
using Xunit.Abstractions;

namespace Optimum.Models.Tests;

/// <summary>
/// Fuzzing <c>optimum-net export</c> (issue #14) with mutated config.json files of every kind's HF folder: missing keys,
/// wrong types, edge and huge values, inconsistent sizes, truncations, flipped bits and JSON garbage, judged by the
/// fixture's rules (<see cref="FixtureConfigRules"/>).
/// </summary>
public sealed class ConfigExportFuzzTests(ITestOutputHelper output) : IDisposable
{
    private readonly string _dir = Repo.TempDir();
    public void Dispose() => Directory.Delete(_dir, true);

    public static TheoryData<string> Kinds => ExportFuzz.Kinds;

    /// <summary>
    /// config.json mutations by the fixture's rules (<see cref="FixtureConfigRules"/>), each through the whole export with the
    /// folder's good weights: refused naming config.json and the key (or, for a size the weights fix, model.safetensors), or
    /// exported with the weights the folder holds.
    /// </summary>
    [Theory]
    [MemberData(nameof(Kinds))]
    public void ConfigMutations_AreRefusedNamingTheFileAndKey_OrExported(string kind)
    {
        var hf = ExportFuzz.HfFolder(kind, _dir);
        var config = Path.Combine(hf, ModelFolder.ConfigFile);
        var weights = Path.Combine(hf, ModelFolder.WeightsFile);
        var outRoot = Path.Combine(_dir, "out");
        var existing = Path.Combine(outRoot, "existing");
        var fresh = Path.Combine(outRoot, "fresh");
        ModelKinds.Export(hf, existing);
        var tensors = SafeTensorsOracle.Structure(File.ReadAllBytes(weights)).Tensors!.ToDictionary(t => t.Name, t => SafeTensorsOracle.Decode(t));
        var (rules, additions) = FixtureConfigRules.For(kind);
        var campaign = new Campaign($"config/{kind}");
        int i = 0;
        var clock = System.Diagnostics.Stopwatch.StartNew();
        foreach (var (m, bytes, key, shape) in new ConfigMutator(File.ReadAllText(config), rules, additions, ExportFuzz.Seed(kind)).Generate())
        {
            File.WriteAllBytes(config, bytes);
            var dest = i++ % 2 == 0 ? fresh : existing;
            ExportFuzz.Export(campaign, m, hf, dest, outRoot, config, (d, _) =>
            {
                // Every parameter holds the folder's tensor of its name (some valid configs read fewer of them).
                var ps = ModelFolder.ReadParameters(d);
                var read = HfWeights.Load(Path.Combine(d, ModelFolder.WeightsFile), ps, out _);
                for (int k = 0; k < ps.Count; k++)
                    if (!tensors.TryGetValue(ps[k].Name, out var t) || !read[k].AsSpan().SequenceEqual(t)) return $"'{ps[k].Name}' is not the folder's tensor";
                return ModelKinds.Read(d).Kind.ModelTypes.Contains(kind) ? null : "the export reads back as another kind";
            }, field: key, orFile: shape ? weights : null);
        }
        output.WriteLine($"{campaign.Summary} ({clock.Elapsed.TotalSeconds:F1} s)");
        campaign.AssertClean();
    }
}

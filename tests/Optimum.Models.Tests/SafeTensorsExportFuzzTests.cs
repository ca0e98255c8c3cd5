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
/// Fuzzing <c>optimum-net export</c> (issue #14) with mutated model.safetensors files of every kind's HF folder. Each input
/// is refused with a one-line error naming the file or, when it is still a valid input, exported with exactly the weights
/// it holds; nothing crashes or hangs, and a refused export leaves its destination (absent, or holding a previous export)
/// byte for byte as it was.
/// </summary>
public sealed class SafeTensorsExportFuzzTests(ITestOutputHelper output) : IDisposable
{
    private readonly string _dir = Repo.TempDir();
    public void Dispose() => Directory.Delete(_dir, true);

    public static TheoryData<string> Kinds => ExportFuzz.Kinds;

    /// <summary>
    /// Every mutation is read as export reads weights (HfWeights.Load against the model's parameters); the first of each
    /// class goes through the whole export, into a destination that does not exist or holds a previous export.
    /// </summary>
    [Theory]
    [MemberData(nameof(Kinds))]
    public void SafeTensorsMutations_AreRefusedNamingTheFile_OrExportedAsTheyAre(string kind)
    {
        var hf = ExportFuzz.HfFolder(kind, _dir);
        var weights = Path.Combine(hf, ModelFolder.WeightsFile);
        var good = File.ReadAllBytes(weights);
        var outRoot = Path.Combine(_dir, "out");
        var existing = Path.Combine(outRoot, "existing");
        var fresh = Path.Combine(outRoot, "fresh");
        ModelKinds.Export(hf, existing);
        var ps = ModelFolder.ReadParameters(existing);
        var campaign = new Campaign($"safetensors/{kind}");
        var whole = new HashSet<string>(StringComparer.Ordinal);
        int exports = 0;
        var clock = System.Diagnostics.Stopwatch.StartNew();
        var exportTime = TimeSpan.Zero;
        foreach (var (m, bytes, judgement) in new SafeTensorsMutator(good, ps, ExportFuzz.Seed(kind)).Generate())
        {
            File.WriteAllBytes(weights, bytes);
            if (whole.Add(m.Class))
            {
                var dest = exports++ % 2 == 0 ? fresh : existing;
                var t0 = clock.Elapsed;
                ExportFuzz.Export(campaign, m, hf, dest, outRoot, weights, (d, unused) => ExportFuzz.Holds(d, unused, judgement));
                exportTime += clock.Elapsed - t0;
                continue;
            }
            float[][]? read = null;
            IReadOnlyList<string> unused = [];
            campaign.Attempt(m, () => read = HfWeights.Load(weights, ps, out unused), weights,
                verify: () => ExportFuzz.Differences(read!, judgement.Weights!, ps) ?? ExportFuzz.Differences(unused, judgement.Unused!));
        }
        output.WriteLine($"{campaign.Summary}; {exports} through the whole export ({exportTime.TotalSeconds:F1} of {clock.Elapsed.TotalSeconds:F1} s)");
        campaign.AssertClean();
    }
}

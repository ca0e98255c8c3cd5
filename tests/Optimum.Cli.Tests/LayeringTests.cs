using System.Text.RegularExpressions;
using Optimum.Tests;
using Xunit;

namespace Optimum.Cli.Tests;

/// <summary>The project graph keeps its layers (README's map): read from the .csproj files, transitively.</summary>
public sealed partial class LayeringTests
{
    [GeneratedRegex("""<ProjectReference Include="([^"]+)"\s*/>""")]
    private static partial Regex Reference();

    /// <summary>Every project <paramref name="csproj"/> reaches through project references, by name.</summary>
    private static HashSet<string> Reachable(string csproj)
    {
        var seen = new HashSet<string>(StringComparer.Ordinal);
        var todo = new Stack<string>([Path.GetFullPath(csproj)]);
        while (todo.TryPop(out var p))
            foreach (Match m in Reference().Matches(File.ReadAllText(p)))
            {
                var r = Path.GetFullPath(Path.Combine(Path.GetDirectoryName(p)!, m.Groups[1].Value));
                if (seen.Add(Path.GetFileNameWithoutExtension(r))) todo.Push(r);
            }
        return seen;
    }

    [Theory]
    [InlineData("src/Optimum.Inference/Optimum.Inference.csproj")]
    [InlineData("src/Optimum.Server/Optimum.Server.csproj")]
    [InlineData("artifacts-gen/Optimum.Models/Optimum.Models.csproj")]
    public void ServingLayers_NeverReachTheTrainerOrMpi(string project)
    {
        var reached = Reachable(Repo.Path(project));
        Assert.DoesNotContain("Optimum.Training", reached);
        Assert.DoesNotContain("Optimum.Distributed", reached);
        Assert.DoesNotContain("optimum-net", reached);
        Assert.DoesNotContain("Optimum.Cli", reached);
    }

    [Fact]
    public void Core_ReferencesNoOtherProject_AndSamplesDoNotReferenceTheCli()
    {
        Assert.Empty(Reachable(Repo.Path("src", "Optimum.Core", "Optimum.Core.csproj")));
        foreach (var sample in Directory.GetFiles(Repo.Path("samples"), "*.csproj", SearchOption.AllDirectories))
            Assert.DoesNotContain("Optimum.Cli", Reachable(sample));
    }
}

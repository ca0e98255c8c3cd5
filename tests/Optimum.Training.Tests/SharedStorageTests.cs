using Optimum.Distributed;
using Optimum.Tests;
using Xunit;

namespace Optimum.Training.Tests;

/// <summary>The check that every rank sees the checkpoint folder, on in-process ranks given folders that differ or agree.</summary>
public sealed class SharedStorageTests : IDisposable
{
    private readonly string _dir = Repo.TempDir();
    public void Dispose() => Directory.Delete(_dir, true);

    [Fact]
    public void Verify_RanksThatSeeOneFolder_PassAndLeaveItEmpty()
    {
        var dir = Path.Combine(_dir, "checkpoints");
        new InProcessWorld(3).Run(c => { SharedStorage.Verify(dir, c); return 0; });
        Assert.Empty(Directory.GetFileSystemEntries(dir));
    }

    [Fact]
    public void Verify_ARankWithAFolderOfItsOwn_FailsOnEveryRankNamingTheFolderAndTheRanks()
    {
        // Rank 2 stands for a machine with its own disk at that path: it can write there but sees none of the others' files.
        var shared = Path.Combine(_dir, "shared", "checkpoints");
        var own = Directory.CreateDirectory(Path.Combine(_dir, "own", "checkpoints")).FullName;
        var errors = new string?[3];
        new InProcessWorld(3).Run(c =>
        {
            try { SharedStorage.Verify(c.Rank == 2 ? own : shared, c, TimeSpan.FromMilliseconds(200)); }
            catch (IOException e) { errors[c.Rank] = e.Message; }
            return 0;
        });
        Assert.All(errors, e => Assert.NotNull(e));
        Assert.StartsWith($"The checkpoint folder '{shared}' is not shared by all 3 ranks: rank 0 does not see the files of 1 other rank(s) (rank 2's); " +
            "rank 1 does not see the files of 1 other rank(s); rank 2 does not see the files of 2 other rank(s). ", errors[0]);
        Assert.Contains("rank 2 does not see the files of 2 other rank(s) (rank 0's, rank 1's)", errors[2]);
        Assert.DoesNotContain("cannot write", errors[0]);
        Assert.Empty(Directory.GetFileSystemEntries(shared));
        Assert.Empty(Directory.GetFileSystemEntries(own));
    }

    [Fact]
    public void Verify_ARankThatCannotWriteThere_SaysSoWithItsError()
    {
        var shared = Path.Combine(_dir, "shared", "checkpoints");
        var missing = Path.Combine(_dir, "not-mounted", "checkpoints");
        var errors = new string?[2];
        new InProcessWorld(2).Run(c =>
        {
            try { SharedStorage.Verify(c.Rank == 1 ? missing : shared, c, TimeSpan.FromMilliseconds(200)); }
            catch (IOException e) { errors[c.Rank] = e.Message; }
            return 0;
        });
        Assert.Contains("is not shared by all 2 ranks: rank 1 cannot write there; rank 0 does not see", errors[0]);
        Assert.Contains($"rank 1 cannot write there (Could not find a part of the path '{missing}/", errors[1]);
    }
}

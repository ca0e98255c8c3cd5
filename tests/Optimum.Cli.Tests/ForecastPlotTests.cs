using Optimum.Plots;
using System.Buffers.Binary;
using Optimum.Tests;
using Xunit;

namespace Optimum.Cli.Tests;

public sealed class ForecastPlotTests
{
    private static readonly DateTime Start = new(2024, 1, 1);

    private static DateTime[] Hours(int from, int count) => Enumerable.Range(from, count).Select(h => Start.AddHours(h)).ToArray();

    private static float[] Wave(int from, int count, float shift = 0) =>
        Enumerable.Range(from, count).Select(t => (float)(10 + 3 * Math.Sin(2 * Math.PI * t / 24)) + shift).ToArray();

    [Fact]
    public void Save_WritesA900x540Png()
    {
        var dir = Repo.TempDir();
        try
        {
            var path = Path.Combine(dir, "series-0.png");
            ForecastPlot.Save(path, "series 0", Hours(0, 72), Wave(0, 72), Hours(72, 24),
                Wave(72, 24), Wave(72, 24, -1.5f), Wave(72, 24, 1.5f), Wave(72, 24, 0.3f));

            var bytes = File.ReadAllBytes(path);
            Assert.Equal([0x89, (byte)'P', (byte)'N', (byte)'G', 0x0D, 0x0A, 0x1A, 0x0A], bytes[..8]);
            Assert.Equal("IHDR"u8.ToArray(), bytes[12..16]);                    // the first chunk, width and height big-endian
            Assert.Equal(900, BinaryPrimitives.ReadInt32BigEndian(bytes.AsSpan(16)));
            Assert.Equal(540, BinaryPrimitives.ReadInt32BigEndian(bytes.AsSpan(20)));
            Assert.Equal(["series-0.png"], Directory.GetFiles(dir).Select(Path.GetFileName));   // no temporary left behind
        }
        finally { Directory.Delete(dir, true); }
    }

    [Fact]
    public void Save_RejectsMismatchedLengthsNamingTheArgument()
    {
        var path = Path.Combine(Path.GetTempPath(), "never-written.png");
        var (ht, h, ft, f) = (Hours(0, 10), Wave(0, 10), Hours(10, 4), Wave(10, 4));
        void Throws(string name, Action act) => Assert.Equal(name, Assert.Throws<ArgumentException>(act).ParamName);

        Throws("history", () => ForecastPlot.Save(path, "t", ht, Wave(0, 9), ft, f, f, f, null));
        Throws("median", () => ForecastPlot.Save(path, "t", ht, h, ft, Wave(10, 3), f, f, null));
        Throws("lower", () => ForecastPlot.Save(path, "t", ht, h, ft, f, Wave(10, 5), f, null));
        Throws("upper", () => ForecastPlot.Save(path, "t", ht, h, ft, f, f, Wave(10, 3), null));
        Throws("actuals", () => ForecastPlot.Save(path, "t", ht, h, ft, f, f, f, Wave(10, 2)));
        Throws("futureTimes", () => ForecastPlot.Save(path, "t", ht, h, [], [], [], [], null));
        Assert.False(File.Exists(path));
    }
}

using Optimum.Tests;
using Optimum.Data;
using Xunit;

namespace Optimum.Training.Tests;

/// <summary>The vega unemployment reader, GluonTS-style windows and time features, and the seasonal-naive baseline.</summary>
public sealed class TimeSeriesDataTests : IDisposable
{
    private readonly string _dir = Repo.TempDir();
    public void Dispose() => Directory.Delete(_dir, true);

    private static readonly string[] Industries =
    [
        "Government", "Mining and Extraction", "Construction", "Manufacturing", "Wholesale and Retail Trade",
        "Transportation and Utilities", "Information", "Finance", "Business services", "Education and Health",
        "Leisure and hospitality", "Other", "Agriculture", "Self-employed",
    ];

    private static IReadOnlyList<TimeSeries> Unemployment() =>
        TimeSeriesFiles.ReadVegaUnemployment(Repo.Path("samples", "data", "unemployment-across-industries.json"));

    [Fact]
    public void ReadVegaUnemployment_CommittedFile_Has14IndustriesOf122Months()
    {
        var series = Unemployment();
        Assert.Equal(Industries, series.Select(s => s.Name));
        Assert.All(series, s => Assert.Equal(122, s.Values.Length));           // 2000-01 .. 2010-02
        Assert.All(series, s => Assert.Equal(new DateTime(2000, 1, 1), s.Start));
        Assert.Equal([430f, 409f, 311f], series[0].Values[..3]);                // Government, from the file
        Assert.Equal(880f, series[0].Values[^1]);
        Assert.Equal(2440f, series[2].Values[^1]);                               // Construction, Feb 2010: the file's maximum
        Assert.Equal([239f, 262f, 213f], series[13].Values[..3]);               // Self-employed
        Assert.Equal(680f, series[13].Values[^1]);
        Assert.Equal(944327.0, series.Sum(s => s.Values.Sum(v => (double)v)));
    }

    [Fact]
    public void ReadVegaUnemployment_SortsByDateAndRefusesGapsDuplicatesAndBadRecords()
    {
        var path = Path.Combine(_dir, "u.json");
        File.WriteAllText(path, """
            [{"series":"A","year":2001,"month":1,"count":3},{"series":"B","year":2000,"month":12,"count":7},
             {"series":"A","year":2000,"month":12,"count":2},{"series":"A","year":2001,"month":2,"count":null}]
            """);
        var s = TimeSeriesFiles.ReadVegaUnemployment(path);
        Assert.Equal(["A", "B"], s.Select(x => x.Name));
        // Empty or garbage files are refused naming the file (they were a JsonReaderException with a stack trace).
        foreach (var (name, text) in new[] { ("empty.json", ""), ("garbage.json", "not json {"), ("cut.json", "[{\"series\": \"A\", ") })
        {
            var bad = Path.Combine(_dir, name);
            File.WriteAllText(bad, text);
            var refused = Assert.Throws<InvalidDataException>(() => TimeSeriesFiles.Read(bad));
            Assert.Contains(bad, refused.Message);
            Assert.Contains("not valid JSON", refused.Message);
        }
        Assert.Equal(new DateTime(2000, 12, 1), s[0].Start);
        Assert.Equal([2f, 3f, float.NaN], s[0].Values);
        Assert.Equal([7f], s[1].Values);

        File.WriteAllText(path, """[{"series":"A","year":2000,"month":1,"count":1},{"series":"A","year":2000,"month":3,"count":1}]""");
        var e = Assert.Throws<InvalidDataException>(() => TimeSeriesFiles.ReadVegaUnemployment(path));
        Assert.Equal($"{path}: series 'A' is not contiguous monthly: 2000-01 is followed by 2000-03 (missing 2000-02).", e.Message);
        File.WriteAllText(path, """[{"series":"A","year":2000,"month":1,"count":1},{"series":"A","year":2000,"month":1,"count":2}]""");
        Assert.Contains("(duplicate month)", Assert.Throws<InvalidDataException>(() => TimeSeriesFiles.ReadVegaUnemployment(path)).Message);
        File.WriteAllText(path, """[{"series":"A","year":2000,"month":1,"count":1},{"series":"A","year":2000,"count":1}]""");
        Assert.StartsWith($"{path}: record 1: expected", Assert.Throws<InvalidDataException>(() => TimeSeriesFiles.ReadVegaUnemployment(path)).Message);
        File.WriteAllText(path, """[{"series":"A","year":2000,"month":13,"count":1}]""");
        Assert.Contains("month 13 is not in 1..12", Assert.Throws<InvalidDataException>(() => TimeSeriesFiles.ReadVegaUnemployment(path)).Message);

        var missing = Path.Combine(_dir, "none.json");
        Assert.Contains(missing, Assert.Throws<FileNotFoundException>(() => TimeSeriesFiles.ReadVegaUnemployment(missing)).Message);
    }

    [Fact]
    public void TimeFeatures_KnownDates()
    {
        Assert.Equal(-0.5, TimeFeatures.MonthOfYear(new DateTime(2000, 1, 1)));
        Assert.Equal(0.5, TimeFeatures.MonthOfYear(new DateTime(2009, 12, 31)));
        Assert.Equal(5 / 11.0 - 0.5, TimeFeatures.MonthOfYear(new DateTime(2004, 6, 15)));
        Assert.Equal(Math.Log10(2), TimeFeatures.Age(0));
        Assert.Equal(2.0, TimeFeatures.Age(98), 12);
        // steps 11 and 12 of a series starting in January: December then January, ages log10(13), log10(14)
        Assert.Equal([0.5f, (float)Math.Log10(13), -0.5f, (float)Math.Log10(14)], TimeFeatures.Monthly(new DateTime(2000, 1, 1), 11, 2));
        // steps -2, -1 (padding) take their calendar months and the age of step 0
        float a0 = (float)Math.Log10(2);
        Assert.Equal([(float)(9 / 11.0 - 0.5), a0, (float)(10 / 11.0 - 0.5), a0], TimeFeatures.Monthly(new DateTime(2000, 12, 1), -2, 2));
    }

    // Two series: x = 1..10 starting 2021-11 with x[4] missing, y = 101..108. P = 2 + max(1, 2) = 4, H = 2, holdout 2.
    private static TimeSeriesWindows Synthetic(int minPast = 0)
    {
        var x = Enumerable.Range(1, 10).Select(i => (float)i).ToArray();
        x[4] = float.NaN;
        var y = Enumerable.Range(101, 8).Select(i => (float)i).ToArray();
        return new TimeSeriesWindows([new("x", new DateTime(2021, 11, 1), x), new("y", new DateTime(2020, 1, 1), y)],
            contextLength: 2, predictionLength: 2, lags: [1, 2], holdout: 2, minPast: minPast, seriesIdAsCategorical: true);
    }

    private static float[] F(string name, Batch b) => (float[])b[name].Data;

    [Fact]
    public void TimeSeriesWindows_SampleCountsFollowHoldoutAndMinPast()
    {
        var w = Synthetic();
        Assert.Equal(4, w.PastLength);
        Assert.Equal(7 + 5, w.TrainSamples);        // t in 0..10-2-2 and 0..8-2-2
        Assert.Equal(2, w.ValidationSamples);
        Assert.Equal(4 + 2, Synthetic(minPast: 3).TrainSamples);

        var s = Unemployment();
        int[] monthlyLags = [1, 2, 3, 4, 5, 6, 7, 11, 12, 13, 23, 24, 25, 35, 36, 37];   // HF's default monthly lags
        var real = new TimeSeriesWindows(s, 24, 12, monthlyLags, holdout: 12, minPast: 0, seriesIdAsCategorical: false);
        Assert.Equal(61, real.PastLength);
        Assert.Equal(14 * 99, real.TrainSamples);   // t in 0..122-24
        Assert.Equal(14, real.ValidationSamples);
    }

    [Fact]
    public void TimeSeriesWindows_TrainWindowsEqualHandSlices()
    {
        var w = Synthetic();
        var b = new Batch();
        w.FillTrain([0, 3, 8], b);               // x at t=0 (all padding), x at t=3 (one pad, NaN in future), y at t=1
        Assert.Equal([3L, 4], b["past_values"].Shape);
        Assert.Equal([3L, 4, 2], b["past_time_features"].Shape);
        Assert.Equal([3L, 2, 2], b["future_time_features"].Shape);
        Assert.Equal([0f, 0, 0, 0, /**/ 0, 1, 2, 3, /**/ 0, 0, 0, 101], F("past_values", b));
        Assert.Equal([0f, 0, 0, 0, /**/ 0, 1, 1, 1, /**/ 0, 0, 0, 1], F("past_observed_mask", b));
        Assert.Equal([1f, 2, /**/ 4, 0, /**/ 102, 103], F("future_values", b));
        Assert.Equal([1f, 1, /**/ 1, 0, /**/ 1, 1], F("future_observed_mask", b));
        Assert.Equal([0L, 0, 1], (long[])b["static_categorical_features"].Data);
        Assert.Equal([3L, 1], b["static_categorical_features"].Shape);
        Assert.Equal(5.0, b.LossWeight);
        Assert.Equal(3, b.Tokens);

        // x (starts 2021-11) at t=3: past steps -1..2 = Oct 2021 (pad), Nov, Dec, Jan 2022; future steps 3, 4 = Feb, Mar 2022
        double M(int month) => (month - 1) / 11.0 - 0.5;
        float[] past = [.. new[] { (M(10), 0), (M(11), 0), (M(12), 1), (M(1), 2) }.SelectMany(p => new[] { (float)p.Item1, (float)TimeFeatures.Age(p.Item2) })];
        Assert.Equal(past, F("past_time_features", b).AsSpan(8, 8).ToArray());
        Assert.Equal([(float)M(2), (float)Math.Log10(5), (float)M(3), (float)Math.Log10(6)], F("future_time_features", b).AsSpan(4, 4).ToArray());
    }

    [Fact]
    public void TimeSeriesWindows_ValidationWindowsEndAtSeriesEnd()
    {
        var w = Synthetic();
        var b = new Batch();
        w.FillValidation(0, 2, b);
        Assert.Equal([0f, 6, 7, 8, /**/ 103, 104, 105, 106], F("past_values", b));     // x[4] is NaN -> 0
        Assert.Equal([0f, 1, 1, 1, /**/ 1, 1, 1, 1], F("past_observed_mask", b));
        Assert.Equal([9f, 10, /**/ 107, 108], F("future_values", b));
        Assert.Equal(4.0, b.LossWeight);

        var s = Unemployment();
        var real = new TimeSeriesWindows(s, 24, 12, [1, 12], holdout: 12, minPast: 0, seriesIdAsCategorical: false);
        var rb = new Batch();
        real.FillValidation(0, 14, rb);
        Assert.False(rb.ContainsKey("static_categorical_features"));
        var future = F("future_values", rb);
        for (int i = 0; i < 14; i++) Assert.Equal(s[i].Values[^12..], future[(i * 12)..((i + 1) * 12)]);
        Assert.Equal(880f, future[11]);
        Assert.Equal(s[13].Values[^48..^12], F("past_values", rb)[(13 * 36)..]);
        Assert.Equal((float)(1 / 11.0 - 0.5), F("future_time_features", rb)[(12 - 1) * 2]);   // the last future step is Feb 2010
        Assert.Equal((float)Math.Log10(2 + 121), F("future_time_features", rb)[(12 - 1) * 2 + 1]);
        Assert.Throws<ArgumentOutOfRangeException>(() => real.FillValidation(10, 5, rb));
    }

    [Fact]
    public void TimeSeriesWindows_ReusesArraysWhileShapesMatch()
    {
        var w = Synthetic();
        var b = new Batch();
        w.FillTrain([0, 1], b);
        var values = b["past_values"].Data;
        w.FillTrain([5, 6], b);
        Assert.Same(values, b["past_values"].Data);
        Assert.Equal([3f, 4, 0, 6], F("past_values", b).AsSpan(4).ToArray());        // x at t=6: steps 2..5, x[4] NaN
        w.FillTrain([0], b);
        Assert.NotSame(values, b["past_values"].Data);
    }

    [Fact]
    public void TimeSeriesWindows_BadArgumentsAreRefused()
    {
        TimeSeries x = new("x", new DateTime(2000, 1, 1), new float[10]);
        Assert.Contains("Need at least one series", Assert.Throws<ArgumentException>(() => new TimeSeriesWindows([], 2, 2, [1], 2, 0, false)).Message);
        Assert.Contains("Holdout 1 is shorter than the prediction length 2", Assert.Throws<ArgumentException>(() => new TimeSeriesWindows([x], 2, 2, [1], 1, 0, false)).Message);
        var e = Assert.Throws<ArgumentException>(() => new TimeSeriesWindows([x], 2, 2, [1], 2, 7, false));
        Assert.Contains("Series 0 ('x') has 10 points; a training window needs minPast 7 + prediction 2 + holdout 2 = 11.", e.Message);
        Assert.Throws<ArgumentException>(() => new TimeSeriesWindows([x], 2, 2, [], 2, 0, false));
        Assert.Throws<ArgumentOutOfRangeException>(() => new TimeSeriesWindows([x], 2, 2, [0, 1], 2, 0, false));
        Assert.Throws<ArgumentOutOfRangeException>(() => new TimeSeriesWindows([x], 0, 2, [1], 2, 0, false));
        Assert.Throws<ArgumentOutOfRangeException>(() => new TimeSeriesWindows([x], 2, 0, [1], 2, 0, false));
        Assert.Throws<ArgumentOutOfRangeException>(() => new TimeSeriesWindows([x], 2, 2, [1], 2, -1, false));
        Assert.Throws<ArgumentOutOfRangeException>(() => new TimeSeriesWindows([x], 2, 2, [1], 2, 0, false).FillTrain([7], new Batch()));
    }

    [Fact]
    public void SeasonalNaive_RepeatsTheLastSeason()
    {
        var history = Enumerable.Range(0, 30).Select(i => (float)Math.Sin(2 * Math.PI * (i % 12) / 12) + i % 12).ToArray();   // period 12, ends mid-period
        var next = Enumerable.Range(30, 18).Select(i => (float)Math.Sin(2 * Math.PI * (i % 12) / 12) + i % 12).ToArray();
        Assert.Equal(next, TimeSeriesBaselines.SeasonalNaive(history, 18, 12));
        Assert.Equal([5f, 6, 5, 6, 5], TimeSeriesBaselines.SeasonalNaive([1f, 2, 5, 6], 5, 2));
        Assert.Equal([2f, 2, 2], TimeSeriesBaselines.SeasonalNaive([1f, 2], 3, 12));          // shorter than a season
        Assert.Throws<ArgumentException>(() => TimeSeriesBaselines.SeasonalNaive([], 3, 12));
        Assert.Throws<ArgumentOutOfRangeException>(() => TimeSeriesBaselines.SeasonalNaive([1f], 3, 0));
    }
}

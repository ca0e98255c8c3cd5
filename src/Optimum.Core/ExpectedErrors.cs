namespace Optimum.Core;

/// <summary>
/// The failures a caller's input or environment causes (missing or malformed files, bad options, shapes, a
/// diverging run, ONNX Runtime refusing a model): commands and samples print their message in one line instead
/// of a stack trace. Programming errors (null references, index errors) are not among them.
/// </summary>
public static class ExpectedErrors
{
    public static bool Are(Exception e) => e is IOException or InvalidDataException or ArgumentException or UnauthorizedAccessException
        or NotSupportedException or InvalidOperationException or Microsoft.ML.OnnxRuntime.OnnxRuntimeException;

    /// <summary>Runs <paramref name="body"/>; an expected failure prints "error: message" to stderr and returns 1.</summary>
    public static int Report(Func<int> body)
    {
        try { return body(); }
        catch (Exception e) when (Are(e))
        {
            Console.Error.WriteLine($"error: {e.Message}");
            return 1;
        }
    }
}

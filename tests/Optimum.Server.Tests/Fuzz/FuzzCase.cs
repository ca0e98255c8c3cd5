namespace Optimum.Server.Tests.Fuzz;

/// <summary>What the service must answer: a status, and for a 4xx about one field, the field the problem's detail names.</summary>
internal sealed record Outcome(int Status, string? Field = null)
{
    public static readonly Outcome Ok = new(200);
    /// <summary>The connection closed without an answer: Kestrel takes a client's half-close while its body is still due as the client leaving.</summary>
    public static readonly Outcome Closed = new(-1);
    public static Outcome Bad(string? field) => new(400, field);
    public static Outcome Range(string? field) => new(422, field);
    public bool Valid => Status == 200;
}

/// <summary>
/// One request of the corpus and what the service must answer. <see cref="Raw"/>, when set, is sent as it is over a
/// socket (requests HttpClient will not make: a body shorter than its Content-Length, broken chunks, bad header bytes);
/// otherwise <see cref="Method"/>, <see cref="Target"/>, <see cref="Headers"/> and <see cref="Body"/> make the request
/// (<see cref="ContentType"/> null: no Content-Type header). <see cref="ProblemBody"/>: a 4xx must come as
/// application/problem+json (false where the server or the router answers before the service: Kestrel's own 400,
/// 414 and 431, the router's 405).
/// </summary>
internal sealed record FuzzCase(string Route, string Family, string What, HttpMethod Method, string Target, byte[]? Body, string? ContentType,
    IReadOnlyList<(string Name, string Value)> Headers, Outcome Expect, bool ProblemBody = true, byte[]? Raw = null, bool CloseAfterSend = false)
{
    public override string ToString() => $"{Method} {Route} [{Family}] {What}";
}

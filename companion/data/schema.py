"""Column schemas of the three UCI data sets, and their attribution."""

from __future__ import annotations

import pandas as pd

#: Column kinds of UCI Online Retail (dataset 352), as in the original workbook.
RETAIL_I_SCHEMA: dict[str, str] = {
    "InvoiceNo": "string",
    "StockCode": "string",
    "Description": "string",
    "Quantity": "integer",
    "InvoiceDate": "datetime",
    "UnitPrice": "float",
    "CustomerID": "float",
    "Country": "string",
}
#: Column kinds of UCI Online Retail II (dataset 502).
RETAIL_II_SCHEMA: dict[str, str] = {
    "Invoice": "string",
    "StockCode": "string",
    "Description": "string",
    "Quantity": "integer",
    "InvoiceDate": "datetime",
    "Price": "float",
    "Customer ID": "float",
    "Country": "string",
}
#: Renaming from the Online Retail names to the Online Retail II names.
I_TO_II = dict(zip(RETAIL_I_SCHEMA, RETAIL_II_SCHEMA, strict=True))
#: Columns of the retail files that may be empty.
RETAIL_NULLABLE = ("Description", "CustomerID", "Customer ID")

#: Column kinds of the Online Shoppers Purchasing Intention data (dataset 468).
SHOPPERS_SCHEMA: dict[str, str] = {
    "Administrative": "integer",
    "Administrative_Duration": "float",
    "Informational": "integer",
    "Informational_Duration": "float",
    "ProductRelated": "integer",
    "ProductRelated_Duration": "float",
    "BounceRates": "float",
    "ExitRates": "float",
    "PageValues": "float",
    "SpecialDay": "float",
    "Month": "string",
    "OperatingSystems": "integer",
    "Browser": "integer",
    "Region": "integer",
    "TrafficType": "integer",
    "VisitorType": "string",
    "Weekend": "bool",
    "Revenue": "bool",
}

#: First day that Online Retail (I) covers; Online Retail II's first sheet overlaps it
#: from this day to 2010-12-09.
OVERLAP_START = pd.Timestamp("2010-12-01")

ATTRIBUTION = (
    "Chen, D. (2015). Online Retail [Dataset]. UCI Machine Learning Repository. "
    "https://doi.org/10.24432/C5BW33. CC BY 4.0.\n"
    "Chen, D. (2019). Online Retail II [Dataset]. UCI Machine Learning Repository. "
    "https://doi.org/10.24432/C5CG6D. CC BY 4.0.\n"
    "Sakar, C. & Kastro, Y. (2018). Online Shoppers Purchasing Intention Dataset [Dataset]. "
    "UCI Machine Learning Repository. https://doi.org/10.24432/C5F88Q. CC BY 4.0."
)
